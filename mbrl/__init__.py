"""mbrl: model-based reinforcement learning and world models."""
from pathlib import Path as _Path

__version__ = "0.1.0"

# The env suites live in the repository's top-level `envs/` and are imported as `mbrl.envs` (a
# top-level `envs` package would collide with the unrelated PyPI package `envs`). A wheel installs
# them as `mbrl/envs/` (setup.cfg `package_dir`); in a checkout (plain or editable) the repository
# root joins this package's search path, so `import mbrl.envs` finds `<repo>/envs` of this same tree.
if not (_Path(__file__).resolve().parent / "envs").is_dir():
    _root = _Path(__file__).resolve().parent.parent
    if (_root / "envs" / "__init__.py").is_file():
        __path__.append(str(_root))  # noqa: F821 (the package's own __path__)


def load(run_dir, device=None):
    """Load a trained run's agent: `agent = mbrl.load(run_dir)`, then `agent.act(obs)` (mbrl/agent.py)."""
    from mbrl.agent import load as _load

    return _load(run_dir, device=device)
