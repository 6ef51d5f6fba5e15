"""`dmc/<domain>-<task>`: DeepMind Control Suite as a `gymnasium.Env` (our own small adapter).

- proprioceptive observation: the observation dict flattened (in the task's key order) to float32 `[D]`;
  `pixels=True`: uint8 `(3, size, size)` rendered with MuJoCo (EGL) from camera 0 (camera 2 for
  quadruped), as in DreamerV3.
- action repeat (default 2): the action is applied `repeat` times, rewards summed; the image is
  rendered once, after the last repeat.
- episodes last 1000 env steps (`ceil(1000 / repeat)` agent steps: 500 at repeat 2) and end
  truncated; `time_limit` sets another length in agent steps. A task that signals termination
  (discount 0) ends `terminated`.
- seeding: `seed` (and `reset(seed=s)`) sets the task's random state, which draws initial states.
"""
from __future__ import annotations

import math
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402
from mbrl.errors import UserError

EPISODE_ENV_STEPS = 1000
DEFAULT_REPEAT = 2
CAMERAS = {"quadruped": 2}


def all_tasks() -> list[str]:
    from dm_control import suite

    return [f"{d}-{t}" for d, t in suite.ALL_TASKS]


def parse_dmc(task: str) -> tuple[str, str]:
    """`"ball_in_cup-catch"` -> `("ball_in_cup", "catch")`; raises UserError listing suite.ALL_TASKS."""

    valid = all_tasks()
    if task not in valid:
        raise UserError(f"unknown dmc domain-task {task!r}; valid: {', '.join(valid)}")
    domain, name = task.split("-", 1)
    return domain, name


class DMCEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(self, task: str, seed: int | None = None, pixels: bool = False, size: int = 64,
                 action_repeat: int | None = None, time_limit: int | None = None, camera: int | None = None,
                 render_mode: str | None = "rgb_array"):
        from dm_control import suite

        self.domain, self.task_name = parse_dmc(task)
        self.repeat = DEFAULT_REPEAT if action_repeat is None else int(action_repeat)
        if self.repeat < 1:
            raise UserError(f"action_repeat must be >= 1, got {action_repeat}")
        self.max_steps = math.ceil(EPISODE_ENV_STEPS / self.repeat) if time_limit is None else int(time_limit)
        if self.max_steps < 1:
            raise UserError(f"time_limit must be >= 1, got {time_limit}")
        self.pixels, self.size = bool(pixels), int(size)
        self.camera = CAMERAS.get(self.domain, 0) if camera is None else int(camera)
        self.render_mode = render_mode
        # we count the episode length ourselves, so the dm_control time limit is switched off
        self._env = suite.load(self.domain, self.task_name,
                               task_kwargs={"random": seed, "time_limit": float("inf")})
        spec = self._env.action_spec()
        self.action_space = spaces.Box(spec.minimum.astype(np.float32), spec.maximum.astype(np.float32),
                                       shape=spec.shape, dtype=np.float32)
        self._obs_keys = list(self._env.observation_spec().keys())
        dim = sum(int(np.prod(s.shape)) for s in self._env.observation_spec().values())
        if self.pixels:
            self.observation_space = spaces.Box(0, 255, (3, self.size, self.size), np.uint8)
        else:
            self.observation_space = spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self._t = 0

    @property
    def physics(self):
        return self._env.physics

    def _obs(self, timestep) -> np.ndarray:
        if self.pixels:
            return np.ascontiguousarray(self.render().transpose(2, 0, 1))
        obs = timestep.observation
        return np.concatenate([np.asarray(obs[k], dtype=np.float32).reshape(-1) for k in self._obs_keys])

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self._env.task._random = np.random.RandomState(seed)
        self._t = 0
        timestep = self._env.reset()
        return self._obs(timestep), {}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(self.action_space.shape)
        reward = 0.0
        for _ in range(self.repeat):
            timestep = self._env.step(action)
            reward += float(timestep.reward or 0.0)
            if timestep.last():
                break
        self._t += 1
        terminated = bool(timestep.last() and timestep.discount == 0.0)
        truncated = bool(not terminated and (timestep.last() or self._t >= self.max_steps))
        info = {"discount": np.float32(0.0 if terminated else 1.0)}
        return self._obs(timestep), reward, terminated, truncated, info

    def render(self) -> np.ndarray:
        return self._env.physics.render(self.size, self.size, camera_id=self.camera)

    def close(self):
        self._env.close() if hasattr(self._env, "close") else None
