"""mbrl: model-based reinforcement learning and world models."""
__version__ = "0.1.0"


def load(run_dir, device=None):
    """Load a trained run's agent: `agent = mbrl.load(run_dir)`, then `agent.act(obs)` (mbrl/agent.py)."""
    from mbrl.agent import load as _load

    return _load(run_dir, device=device)
