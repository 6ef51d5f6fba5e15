"""`atari/<game>`: the Atari 100k protocol as the model-based literature runs it (DreamerV3, STORM,
DIAMOND): `ALE/<Game>-v5` with frameskip 1 and no sticky actions (repeat_action_probability 0),
minimal action set; this wrapper does the rest:

- frame skip 4 (`action_repeat`), the observation is the max over the last two frames;
- 1..30 no-op actions after each reset (`noop_max`, 0 disables);
- resize to 64x64 (`size`, cv2 INTER_AREA), uint8 channel-first `(3, 64, 64)`; `grayscale=True`
  gives `(1, 64, 64)`;
- `info["life_loss"]` is True on a step that lost a life (`info["lives"]` the count);
  `life_loss_terminal=True` also sets `terminated` there (the game then goes on at the next reset,
  as in DQN's episodic-life training), only a game over resets the game;
- episodes end at game over (`terminated`) or after 108k frames = 27k agent steps (`truncated`);
- rewards are the raw game score (clipping is the algorithm's job).

Names: `atari/pong`, `atari/Pong`, `atari/ms_pacman`, `atari/MsPacman` (any case, with or without
underscores) map onto ALE's CamelCase game names.
"""
from __future__ import annotations

import difflib
import functools

import cv2
import gymnasium as gym
import numpy as np
from gymnasium import spaces
from mbrl.errors import UserError

MAX_FRAMES = 108_000
DEFAULT_SKIP = 4


@functools.lru_cache(maxsize=1)
def ale_games() -> dict[str, str]:
    """normalised name (lower case, no `_`) -> ALE CamelCase name, from the registered `ALE/*-v5` ids."""
    import ale_py

    gym.register_envs(ale_py)
    games = {}
    for env_id in gym.registry:
        if env_id.startswith("ALE/") and env_id.endswith("-v5"):
            name = env_id[len("ALE/"):-len("-v5")]
            games[_norm(name)] = name
    return games


def _norm(name: str) -> str:
    return name.replace("_", "").replace("-", "").replace(" ", "").lower()


def game_name(task: str) -> str:
    """`"ms_pacman"` / `"MsPacman"` / `"mspacman"` -> `"MsPacman"`; UserError listing ALE's games."""

    games = ale_games()
    key = _norm(task)
    if key in games:
        return games[key]
    close = [games[k] for k in difflib.get_close_matches(key, list(games), n=3, cutoff=0.6)]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UserError(f"unknown atari game {task!r}{hint}; valid: {', '.join(sorted(games.values()))}")


class AtariEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, game: str, size: int = 64, grayscale: bool = False, frame_skip: int = DEFAULT_SKIP,
                 noop_max: int = 30, life_loss_terminal: bool = False, time_limit: int | None = None,
                 max_frames: int = MAX_FRAMES, render_mode: str | None = "rgb_array"):
        self.game = game_name(game)
        if int(frame_skip) < 1:
            raise UserError(f"action_repeat (frame skip) must be >= 1, got {frame_skip}")
        if int(noop_max) < 0:
            raise UserError(f"noop_max must be >= 0, got {noop_max}")
        self.size, self.grayscale, self.frame_skip = int(size), bool(grayscale), int(frame_skip)
        self.noop_max, self.life_loss_terminal = int(noop_max), bool(life_loss_terminal)
        self.max_steps = max_frames // self.frame_skip if time_limit is None else int(time_limit)
        self.render_mode = render_mode
        self._env = gym.make(f"ALE/{self.game}-v5", frameskip=1, repeat_action_probability=0.0,
                             full_action_space=False, max_num_frames_per_episode=int(max_frames))
        self.ale = self._env.unwrapped.ale
        self._action_set = np.asarray(self._env.unwrapped._action_set)
        self.action_space = spaces.Discrete(len(self._action_set))
        self.observation_space = spaces.Box(0, 255, (1 if self.grayscale else 3, self.size, self.size), np.uint8)
        height, width = self.ale.getScreenDims()
        self._frames = np.zeros((2, height, width, 3), np.uint8)
        self._noop = self._action_set[0]  # the minimal action set starts with NOOP
        self._lives = 0
        self._t = 0
        self._life_lost_only = False  # last episode ended by a life loss (life_loss_terminal), not game over

    def action_meanings(self) -> list[str]:
        return self._env.unwrapped.get_action_meanings()

    def _observation(self) -> np.ndarray:
        pooled = np.maximum(self._frames[0], self._frames[1])
        if self.grayscale:
            pooled = cv2.cvtColor(pooled, cv2.COLOR_RGB2GRAY)
        if pooled.shape[:2] != (self.size, self.size):
            pooled = cv2.resize(pooled, (self.size, self.size), interpolation=cv2.INTER_AREA)
        if pooled.ndim == 2:
            return pooled[None].copy()
        return np.ascontiguousarray(pooled.transpose(2, 0, 1))

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        if self._life_lost_only and seed is None and not self.ale.game_over():
            # episodic-life: a life was lost, the game goes on (one no-op to move past the loss frame)
            self.ale.act(self._noop)
        else:
            self._env.reset(seed=seed)
            noops = int(self.np_random.integers(1, self.noop_max + 1)) if self.noop_max > 0 else 0
            for _ in range(noops):
                self.ale.act(self._noop)
                if self.ale.game_over():
                    self._env.reset()
        self._life_lost_only = False
        self._t = 0
        self._lives = self.ale.lives()
        self.ale.getScreenRGB(self._frames[0])
        self._frames[1] = self._frames[0]
        return self._observation(), {"lives": self._lives, "life_loss": False}

    def step(self, action):
        ale_action = self._action_set[int(action)]
        reward = 0.0
        last = self.frame_skip - 1
        for i in range(self.frame_skip):
            reward += self.ale.act(ale_action)
            over = self.ale.game_over()  # game over or the frame limit
            if i == last - 1:
                self.ale.getScreenRGB(self._frames[0])
            if i == last or over:
                self.ale.getScreenRGB(self._frames[1])
                if i < last - 1:  # ended before the second-to-last frame: pool over the final frame only
                    self._frames[0] = self._frames[1]
                break
        self._t += 1
        lives = self.ale.lives()
        life_loss = lives < self._lives
        self._lives = lives
        terminated = self.ale.game_over(with_truncation=False)
        truncated = (self.ale.game_truncated() or self._t >= self.max_steps) and not terminated
        if self.life_loss_terminal and life_loss and not (terminated or truncated):
            terminated = True
            self._life_lost_only = True
        return self._observation(), float(reward), bool(terminated), bool(truncated), \
            {"lives": lives, "life_loss": bool(life_loss)}

    def render(self) -> np.ndarray:
        return self.ale.getScreenRGB()

    def close(self):
        self._env.close()


def make_atari(task: str, *, pixels: bool | None = None, size: int = 64, action_repeat: int | None = None,
               time_limit: int | None = None, **kwargs) -> AtariEnv:
    if pixels is False:
        raise UserError("atari observations are pixels only; drop pixels=False")
    return AtariEnv(task, size=size, frame_skip=DEFAULT_SKIP if action_repeat is None else action_repeat,
                    time_limit=time_limit, **kwargs)
