"""Load a trained agent and act: `agent = mbrl.load(run_dir)`, then `action = agent.act(obs)`.

    import mbrl

    agent = mbrl.load("runs/sac/toy/point/2026-12-02_07-00-00")
    env = agent.make_env(seed=0)             # the env the run acted in (envs.make_single, same kwargs)
    obs, _ = env.reset()
    agent.reset()                            # a new episode: the agent's recurrent state starts over
    done = False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(agent.act(obs))
        done = terminated or truncated

Works for every algo (dreamer, pets, mbpo, sac, the offline ones): the agent is the run's own
`Algorithm` (config.yaml + checkpoints/latest.pt) acting through `Algorithm.act`, with the state
that acting carries (a world model's posterior `Tracker`, PETS' planners and their warm starts)
kept inside the agent. `reset()` or `act(obs, is_first=True)` starts a new episode; the first call
after loading starts one too. `obs` is one observation (`action` is then one action) or a batch
`[n, ...]` of n envs (`is_first` then a bool per env; actions `[n, ...]`). `explore=True` samples
from the policy instead of acting deterministically (the default, as in evaluation).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from mbrl.errors import UserError


class Agent:
    """A trained policy with its acting state; see the module docstring."""

    def __init__(self, algo: Any, config: Any, run_dir: Path, env_steps: int):
        self.algo, self.config, self.run_dir, self.env_steps = algo, config, Path(run_dir), int(env_steps)
        self.observation_space = algo.eval_env.single_observation_space
        self.action_space = algo.eval_env.single_action_space
        self._state: Any = None
        self._n: Optional[int] = None

    @property
    def env_name(self) -> str:
        """The env the agent acts in (an offline run's evaluation env, else the run's `env`)."""
        from mbrl.algos.common import setting

        dataset = getattr(self.algo, "dataset", None)
        return str(setting(self.config, "eval_env") or getattr(dataset, "eval_env", None) or self.config.env)

    def make_env(self, seed: Optional[int] = 0, **kwargs: Any):
        """One (non-vector) env like the run's (`envs.make_single` with the run's `env_kwargs`,
        none for an offline run's evaluation env); `kwargs` add to them (e.g. render_mode)."""
        from mbrl import envs
        from mbrl.algos.common import to_dict

        kw = {} if getattr(self.algo, "dataset", None) is not None else to_dict(self.config.get("env_kwargs"))
        kw.update(kwargs)
        return envs.make_single(self.env_name, seed, **kw)

    def reset(self) -> None:
        """Forget the acting state: the next `act` starts a new episode."""
        self._state, self._n = None, None

    def _batched(self, obs: Any) -> bool:
        space = self.observation_space
        if isinstance(obs, dict):
            k = next(iter(space.spaces))
            shape, want = np.shape(obs[k]), tuple(space.spaces[k].shape)
        else:
            shape, want = np.shape(obs), tuple(space.shape)
        if shape == want:
            return False
        if len(shape) == len(want) + 1 and shape[1:] == want:
            return True
        raise UserError(f"agent.act: observation of shape {shape}; valid: {want} (one observation) or [n, *{want}] (a batch of n)")

    def act(self, obs: Any, is_first: Any = None, explore: bool = False) -> np.ndarray:
        """The action for `obs` (one observation, or a batch [n, ...]); `is_first` marks episode
        starts (default: only the first call after loading or `reset()`)."""
        import torch

        batched = self._batched(obs)
        if not batched:
            obs = {k: np.asarray(v)[None] for k, v in obs.items()} if isinstance(obs, dict) else np.asarray(obs)[None]
        n = len(next(iter(obs.values()))) if isinstance(obs, dict) else len(obs)
        if self._n is not None and n != self._n:  # another number of envs: start over
            self.reset()
        if is_first is None:
            first = np.full(n, self._state is None and self._n is None, dtype=bool)
        else:
            first = np.broadcast_to(np.asarray(is_first, dtype=bool), (n,)).copy()
        with torch.no_grad():
            action, self._state = self.algo.act(obs, first, self._state, explore=explore)
        self._n = n
        action = np.asarray(action)
        return action if batched else action[0]


def load(run_dir: str | Path, device: Optional[str] = None) -> Agent:
    """The agent of a finished or checkpointed run (`run_dir` with config.yaml and
    checkpoints/latest.pt); `device` overrides the run's (e.g. "cpu" for a run trained on CUDA)."""
    from mbrl.evaluate import load_algorithm

    run_dir = Path(run_dir)
    algo, ckpt = load_algorithm(run_dir, 1, device=device)
    from omegaconf import OmegaConf

    return Agent(algo, OmegaConf.load(run_dir / "config.yaml"), run_dir, ckpt["counters"]["env_steps"])
