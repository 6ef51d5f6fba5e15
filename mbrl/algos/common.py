"""Pieces every `from_config` shares: envs, loop settings, the replay buffer, run directories."""
from __future__ import annotations

from typing import Any

import gymnasium as gym
from omegaconf import DictConfig, OmegaConf

from mbrl.algos.base import LoopConfig, resolve_device
from mbrl.errors import UserError


def to_dict(cfg: Any) -> dict:
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def setting(cfg: Any, key: str, default: Any = None) -> Any:
    """A run setting: the top-level key where set (not null), else the algo config's, else `default`."""
    v = cfg.get(key)
    if v is None and cfg.get("algo") is not None:
        v = cfg.algo.get(key)
    return default if v is None else v


def make_envs(cfg: Any):
    """Training vector env (`num_envs`) and evaluation vector env (one env per eval episode, at most 10)."""
    from mbrl import envs

    kw = to_dict(cfg.get("env_kwargs"))
    env = envs.make(cfg.env, seed=cfg.seed, num_envs=int(setting(cfg, "num_envs", 1)), **kw)
    n_eval = max(1, min(int(setting(cfg, "eval_episodes", 5)), 10))
    eval_env = envs.make(cfg.env, seed=cfg.seed + 10_000, num_envs=n_eval, **kw)
    return env, eval_env


def loop_config(cfg: Any) -> LoopConfig:
    """Loop settings: the algo's config first (prefill, train_ratio, ...), then top-level keys
    (steps, seed, device, eval_every, ...) where they are set (not null)."""
    merged = {k: v for k, v in to_dict(cfg.get("algo")).items() if not isinstance(v, dict)}
    merged.update({k: v for k, v in to_dict(cfg).items() if v is not None and not isinstance(v, dict)})
    return LoopConfig.from_mapping(merged)


def vector_obs_dim(space: gym.Space, who: str) -> int:
    """Flat size of a vector observation space; a clear error for pixels or dicts."""
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return int(space.shape[0])
    raise UserError(f"{who} needs vector observations (a 1-D Box); this env gives {space}. Use a world model with an encoder (e.g. model=rssm algo=dreamer) for pixels.")


def make_buffer(env, cfg: Any, capacity: int, **kw: Any):
    from mbrl.data import ReplayBuffer

    return ReplayBuffer.for_env(env, capacity=int(capacity), seed=cfg.seed, device=resolve_device(cfg.get("device", "cpu")), **kw)


SAMPLINGS = ("uniform", "dfs")


def replay_sampling(a: Any, who: str) -> dict:
    """ReplayBuffer options for `algo.sampling` (uniform | dfs: Drama's dynamic frequency-based sampling
    with temperature `algo.dfs_tau`)."""
    kind = str(a.get("sampling", "uniform"))
    if kind not in SAMPLINGS:
        raise UserError(f"{who}: algo.sampling={kind!r}; valid: {', '.join(SAMPLINGS)}")
    if kind == "uniform":
        return {}
    tau = float(a.get("dfs_tau", 10.0))
    if not tau > 0:
        raise UserError(f"{who}: algo.dfs_tau={tau}; valid: a float > 0 (Drama: 10)")
    return {"dfs_tau": tau}


def build_model(cfg: Any, spaces: Any, who: str):
    """The world model that `cfg.model` names, from the registry, for `spaces` (a vector env or an
    (observation space, action space) pair), its initial weights drawn from the run's seed."""
    from mbrl import models

    obs_space, action_space = (spaces.single_observation_space, spaces.single_action_space) if hasattr(spaces, "single_observation_space") else spaces
    mcfg = to_dict(cfg.get("model"))
    if not mcfg.get("name"):
        raise UserError(f"{who} needs a world model; add model=<name> (valid: {', '.join(models.names())})")
    return models.build(mcfg, obs_space, action_space, seed=int(cfg.get("seed", 0) or 0))


def build_learner(cfg: Any, feat_dim: int, action_space: gym.Space, who: str):
    """The model-free learner that `cfg.learner` names (configs/learner/<name>.yaml)."""
    from mbrl import learners

    lcfg = to_dict(cfg.get("learner"))
    if not lcfg.get("name"):
        raise UserError(f"{who} needs a learner; add learner=<name> (valid: {', '.join(sorted(learners.LEARNERS))})")
    return learners.build(lcfg, int(feat_dim), action_space)
