"""Common wrappers shared by the suites.

- `RescaleAction`: a bounded continuous `Box` action space becomes float32 `[-1, 1]`.
- `VectorObs`: any non-image observation becomes one flat float32 vector.
- `ChannelFirst`: an image observation `(H, W, C)` becomes uint8 `(C, size, size)` (cv2 INTER_AREA).
- `RenderObs`: the observation is replaced by `env.render()` (an `rgb_array` env) as uint8 CHW.
- `ActionRepeat`: repeat each action `repeat` times, summing the rewards, stopping at episode end.
- `TimeLimit`: truncate after `max_steps` agent steps.
- `SeedOnFirstReset`: the first `reset()` without a seed uses the seed given to `envs.make`.
"""
from __future__ import annotations

from typing import Any

import cv2
import gymnasium as gym
import numpy as np
from gymnasium import spaces
from mbrl.errors import UserError


def resize_chw(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 `(H, W, C)` image -> uint8 `(C, size, size)` (INTER_AREA when shrinking)."""
    h, w = image.shape[:2]
    if (h, w) != (size, size):
        interp = cv2.INTER_AREA if (h >= size and w >= size) else cv2.INTER_LINEAR
        image = cv2.resize(image, (size, size), interpolation=interp)
    if image.ndim == 2:
        image = image[:, :, None]
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.uint8)


def is_image_space(space: gym.Space) -> bool:
    return isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) in (2, 3)


class RescaleAction(gym.ActionWrapper):
    """Expose a bounded `Box` action space as float32 `[-1, 1]`; actions are clipped to it and mapped
    affinely onto the env's `[low, high]`. Dimensions with infinite bounds pass through unchanged."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        space = env.action_space
        assert isinstance(space, spaces.Box), space
        low = np.asarray(space.low, dtype=np.float64)
        high = np.asarray(space.high, dtype=np.float64)
        self._bounded = np.isfinite(low) & np.isfinite(high)
        self._low = np.where(self._bounded, low, -1.0)
        self._high = np.where(self._bounded, high, 1.0)
        new_low = np.where(self._bounded, -1.0, low).astype(np.float32)
        new_high = np.where(self._bounded, 1.0, high).astype(np.float32)
        self.action_space = spaces.Box(new_low, new_high, shape=space.shape, dtype=np.float32)
        self._inner_dtype = space.dtype

    def action(self, action):
        a = np.asarray(action, dtype=np.float64).reshape(self.action_space.shape)
        clipped = np.clip(a, -1.0, 1.0)
        scaled = self._low + (clipped + 1.0) * 0.5 * (self._high - self._low)
        out = np.where(self._bounded, scaled, a)
        return out.astype(self._inner_dtype)


class VectorObs(gym.ObservationWrapper):
    """Flatten any (non-image) observation — Box of any rank, Dict, Tuple, Discrete — to float32 `[D]`."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._inner = env.observation_space
        flat = spaces.flatten_space(self._inner)
        self.observation_space = spaces.Box(
            flat.low.astype(np.float32), flat.high.astype(np.float32), shape=flat.shape, dtype=np.float32
        )

    def observation(self, observation):
        return np.asarray(spaces.flatten(self._inner, observation), dtype=np.float32)


class ChannelFirst(gym.ObservationWrapper):
    """Image observation `(H, W, C)` or `(H, W)` uint8 -> `(C, size, size)` uint8."""

    def __init__(self, env: gym.Env, size: int | None = None):
        super().__init__(env)
        shape = env.observation_space.shape
        c = shape[2] if len(shape) == 3 else 1
        self._size = size
        h, w = (size, size) if size else shape[:2]
        self.observation_space = spaces.Box(0, 255, (c, h, w), np.uint8)

    def observation(self, observation):
        img = np.asarray(observation, dtype=np.uint8)
        if self._size:
            return resize_chw(img, self._size)
        if img.ndim == 2:
            img = img[:, :, None]
        return np.ascontiguousarray(img.transpose(2, 0, 1))


class RenderObs(gym.ObservationWrapper):
    """Replace the observation by the env's `rgb_array` rendering, uint8 `(3, size, size)`."""

    def __init__(self, env: gym.Env, size: int = 64):
        super().__init__(env)
        if env.render_mode != "rgb_array":
            raise UserError(f"pixel observations need render_mode='rgb_array', env has {env.render_mode!r}")
        self._size = size
        self.observation_space = spaces.Box(0, 255, (3, size, size), np.uint8)

    def observation(self, observation):
        return resize_chw(np.asarray(self.env.render())[:, :, :3], self._size)


class ActionRepeat(gym.Wrapper):
    """Repeat each action `repeat` times; rewards are summed; stops early when the episode ends."""

    def __init__(self, env: gym.Env, repeat: int):
        super().__init__(env)
        if int(repeat) < 1:
            raise UserError(f"action_repeat must be >= 1, got {repeat}")
        self.repeat = int(repeat)

    def step(self, action):
        total = 0.0
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


class TimeLimit(gym.Wrapper):
    """Truncate the episode after `max_steps` steps of this wrapper (agent steps when outermost)."""

    def __init__(self, env: gym.Env, max_steps: int):
        super().__init__(env)
        if int(max_steps) < 1:
            raise UserError(f"time_limit must be >= 1, got {max_steps}")
        self.max_steps = int(max_steps)
        self._t = 0

    def reset(self, **kwargs):
        self._t = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._t += 1
        if self._t >= self.max_steps and not terminated:
            truncated = True
        return obs, reward, terminated, truncated, info


class SeedOnFirstReset(gym.Wrapper):
    """Seed the env (and its action space) with `seed` on the first reset that does not give one."""

    def __init__(self, env: gym.Env, seed: int | None):
        super().__init__(env)
        self._seed = seed
        if seed is not None:
            self.action_space.seed(seed)
            self.observation_space.seed(seed)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None and self._seed is not None:
            seed = self._seed
        self._seed = None
        return self.env.reset(seed=seed, options=options)
