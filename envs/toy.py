"""Toy tasks: tiny, fast, pure numpy; for tests and smoke runs (`toy/<task>`).

| name               | obs                  | action        | len | random policy | good policy |
|--------------------|----------------------|---------------|-----|---------------|-------------|
| `toy/point`        | float32 (4,)         | Box[-1,1]^2   | 50  | -52.2 ± 23.9  | -5.1 ± 4.4  |
| `toy/point-pixels` | uint8 (3, size, size)| Box[-1,1]^2   | 50  | -52.2 ± 23.9  | -5.1 ± 4.4  |
| `toy/chain`        | float32 (10,)        | Discrete(3)   | 30  |   6.5 ± 4.4   | 26.0 (max)  |
| `toy/memory-<L>`   | float32 (k+1,)       | Discrete(k)   | L+1 | 1/k (0.25)    | 1.0 (max)   |

(random policy: mean ± std over 1000 episodes of uniform actions, measured with
`python -m envs.toy`; good policy: `toy/point` moving straight to the goal, `toy/chain` always
"right".) Learnability, measured: SAC (`python -m mbrl.train env=toy/point algo=sac steps=4000
algo.prefill=500`, seed 0) reaches eval returns -37.8 / -18.9 / -9.8 / -6.7 after 1k / 2k / 3k / 4k
env steps.

`toy/point`: a 2-D point in [-1, 1]^2 moves by 0.1 * action per step toward a goal; both are
drawn uniformly at reset. Observation `[x, y, goal_x, goal_y]`; reward `-||pos - goal||` after the
move; no termination, truncated after 50 steps. `toy/point-pixels` (or `toy/point` with
`pixels=True`) renders the same state as an image: the point is a red square, the goal a green one,
on black; `size` sets the image side (default 64; 16 is enough for tiny encoders).

`toy/chain`: ten states in a row, start at the left end; actions left / stay / right; reward
`position / 9` each step (so 1 at the right end); one-hot observation; truncated after 30 steps.

`toy/memory-<L>` (e.g. `toy/memory-64`; L >= 1): a memory task in the spirit of S4WM's (Deng et al.
2023) and R2I's (Samsami et al. 2024) memory benchmarks. At step 0 the observation shows a cue, one
of `cues` (k, default 4) as a one-hot in the first k entries; for the next L - 1 steps the
observation is all zeros; at step L the last entry (the query flag) is 1 and the action taken there
is the answer: reward 1 if it names the cue (action == cue), else 0, and the episode terminates.
No other step gives reward and no action before the query changes anything, so nothing but a memory
of step 0 beats chance: a random policy (or any policy without memory, which sees the same query
observation whatever the cue) scores 1/k in expectation, recalling the cue scores 1. Observations
carry no clock, so the query flag is what tells the agent when to answer. One step is a few numpy
operations (L in the hundreds is cheap); vector observations only.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from mbrl.errors import UserError

TASKS = ("point", "point-pixels", "chain")
#: parameterised toy tasks (`toy/memory-64`): the prefix and what the suffix is
PATTERNS = ("memory-<L>",)


class PointEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, pixels: bool = False, size: int = 64, horizon: int = 50, speed: float = 0.1,
                 render_mode: str | None = None):
        self.pixels, self.size, self.horizon, self.speed = bool(pixels), int(size), int(horizon), float(speed)
        self.render_mode = render_mode
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        if self.pixels:
            self.observation_space = spaces.Box(0, 255, (3, self.size, self.size), np.uint8)
        else:
            self.observation_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        self._radius = max(1, self.size // 16)
        self._grid = np.arange(self.size)
        self.pos = np.zeros(2)
        self.goal = np.zeros(2)
        self._t = 0

    def _image(self) -> np.ndarray:
        img = np.zeros((3, self.size, self.size), np.uint8)
        for channel, p in ((0, self.pos), (1, self.goal)):
            col, row = np.rint((p + 1.0) * 0.5 * (self.size - 1)).astype(int)
            rows = np.abs(self._grid - row) <= self._radius
            cols = np.abs(self._grid - col) <= self._radius
            img[channel] = np.outer(rows, cols) * 255
        return img

    def _obs(self):
        if self.pixels:
            return self._image()
        return np.concatenate([self.pos, self.goal]).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-1.0, 1.0, 2)
        self.goal = self.np_random.uniform(-1.0, 1.0, 2)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        self.pos = np.clip(self.pos + self.speed * a, -1.0, 1.0)
        self._t += 1
        reward = -float(np.linalg.norm(self.pos - self.goal))
        return self._obs(), reward, False, self._t >= self.horizon, {}

    def render(self):
        return self._image().transpose(1, 2, 0).copy()


class ChainEnv(gym.Env):
    metadata = {"render_modes": [], "render_fps": 20}

    def __init__(self, length: int = 10, horizon: int = 30):
        self.length, self.horizon = int(length), int(horizon)
        self.action_space = spaces.Discrete(3)
        self.observation_space = spaces.Box(0.0, 1.0, (self.length,), np.float32)
        self.state = 0
        self._t = 0

    def _obs(self):
        obs = np.zeros(self.length, np.float32)
        obs[self.state] = 1.0
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state, self._t = 0, 0
        return self._obs(), {}

    def step(self, action):
        self.state = int(np.clip(self.state + int(action) - 1, 0, self.length - 1))
        self._t += 1
        reward = self.state / (self.length - 1)
        return self._obs(), reward, False, self._t >= self.horizon, {}


class MemoryEnv(gym.Env):
    """`toy/memory-<L>`: recall a cue shown at step 0 when queried at step L (see the module docstring)."""

    metadata = {"render_modes": [], "render_fps": 20}

    def __init__(self, length: int = 16, cues: int = 4):
        self.length, self.cues = int(length), int(cues)
        if self.length < 1 or self.cues < 2:
            raise UserError(f"toy/memory: length={length}, cues={cues}; valid: length >= 1 (toy/memory-<L>) and cues >= 2")
        self.action_space = spaces.Discrete(self.cues)
        self.observation_space = spaces.Box(0.0, 1.0, (self.cues + 1,), np.float32)
        self.cue = 0
        self._t = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.cues + 1, np.float32)
        if self._t == 0:
            obs[self.cue] = 1.0
        if self._t == self.length:
            obs[self.cues] = 1.0
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.cue = int(self.np_random.integers(self.cues))
        self._t = 0
        return self._obs(), {"cue": self.cue}

    def step(self, action):
        query = self._t == self.length
        reward = float(query and int(np.asarray(action).reshape(-1)[0]) == self.cue)
        self._t += 1
        return self._obs(), reward, bool(query), False, {}


def memory_length(task: str) -> int | None:
    """L of `memory-<L>` (None for other names); a malformed L is a UserError."""
    if not task.startswith("memory-"):
        return None
    tail = task[len("memory-"):]
    if not tail.isdigit() or int(tail) < 1:
        raise UserError(f"toy task {task!r}: the memory length must be an integer >= 1; valid: memory-<L>, e.g. memory-64")
    return int(tail)


def check_task(task: str) -> None:
    """Validate a toy task name without building it."""
    if task not in TASKS and memory_length(task) is None:
        raise UserError(f"unknown toy task {task!r}; valid: {', '.join(TASKS + PATTERNS)}")


def make_toy(task: str, *, pixels: bool | None = None, size: int = 64, **kwargs) -> gym.Env:

    if task == "point":
        return PointEnv(pixels=bool(pixels), size=size, **kwargs)
    if task == "point-pixels":
        if pixels is False:
            raise UserError("toy/point-pixels has pixel observations; use toy/point for vector ones")
        return PointEnv(pixels=True, size=size, **kwargs)
    if task == "chain":
        if pixels:
            raise UserError("toy/chain has no pixel observations; pixel toy tasks: point-pixels")
        return ChainEnv(**kwargs)
    length = memory_length(task)
    if length is not None:
        if pixels:
            raise UserError(f"toy/{task} has no pixel observations; pixel toy tasks: point-pixels")
        return MemoryEnv(length=length, **kwargs)
    raise UserError(f"unknown toy task {task!r}; valid: {', '.join(TASKS + PATTERNS)}")


if __name__ == "__main__":  # measure the random-policy returns quoted in the docstring
    for name in TASKS + ("memory-16",):
        env = make_toy(name, size=16)
        env.action_space.seed(0)
        returns = []
        for ep in range(1000):
            env.reset(seed=ep)
            total, done = 0.0, False
            while not done:
                _, r, term, trunc, _ = env.step(env.action_space.sample())
                total += r
                done = term or trunc
            returns.append(total)
        print(f"toy/{name}: random return {np.mean(returns):.1f} ± {np.std(returns):.1f}")
    env, good = PointEnv(), []
    for ep in range(1000):
        env.reset(seed=ep)
        total = sum(env.step(np.clip((env.goal - env.pos) / env.speed, -1, 1))[1] for _ in range(env.horizon))
        good.append(total)
    print(f"toy/point: move-to-goal return {np.mean(good):.1f} ± {np.std(good):.1f}")
