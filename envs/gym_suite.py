"""`gym/<id>`: any registered gymnasium id (MuJoCo v5 locomotion, classic control, ...)."""
from __future__ import annotations

import difflib

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .wrappers import ActionRepeat, ChannelFirst, RenderObs, RescaleAction, VectorObs, is_image_space
from mbrl.errors import UserError


def _registry_ids() -> list[str]:
    if not any(k.startswith("ALE/") for k in gym.registry):
        try:
            import ale_py

            gym.register_envs(ale_py)
        except ImportError:  # pragma: no cover - ale-py is a dependency
            pass
    return sorted(gym.registry)


def check_gym_id(task: str) -> None:

    if task in gym.registry:
        return
    ids = _registry_ids()
    if task in ids:
        return
    close = difflib.get_close_matches(task, ids, n=5, cutoff=0.6)
    if not close:
        lowered = {i.lower(): i for i in ids}
        close = [lowered[m] for m in difflib.get_close_matches(task.lower(), list(lowered), n=5, cutoff=0.5)]
    hint = f"did you mean: {', '.join(close)}" if close else "e.g. " + ", ".join(
        i for i in ("Pendulum-v1", "CartPole-v1", "HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5",
                    "Humanoid-v5", "InvertedPendulum-v5") if i in gym.registry)
    raise UserError(f"unknown gymnasium id {task!r}; valid: any id in gymnasium.registry ({hint})")


def make_gym(task: str, *, pixels: bool | None = None, size: int = 64, action_repeat: int | None = None,
             time_limit: int | None = None, **kwargs) -> gym.Env:
    check_gym_id(task)
    repeat = 1 if action_repeat is None else int(action_repeat)
    if time_limit is not None:
        kwargs["max_episode_steps"] = int(time_limit) * repeat
    if pixels:
        kwargs["render_mode"] = "rgb_array"
    env = gym.make(task, **kwargs)
    if repeat > 1:
        env = ActionRepeat(env, repeat)
    if pixels:
        env = RenderObs(env, size)
    elif is_image_space(env.observation_space):
        env = ChannelFirst(env, size)
    elif not (isinstance(env.observation_space, spaces.Box) and len(env.observation_space.shape) == 1
              and env.observation_space.dtype == np.float32):
        env = VectorObs(env)
    if isinstance(env.action_space, spaces.Box):
        env = RescaleAction(env)
    return env
