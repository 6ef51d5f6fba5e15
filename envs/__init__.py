"""Environment suites behind one name: `envs.make("dmc/walker-walk", seed=0, num_envs=4)`.

Names are `suite/task`:
- `gym/<id>`           any gymnasium id: `gym/HalfCheetah-v5`, `gym/Pendulum-v1`, `gym/CartPole-v1`
- `dmc/<domain>-<task>` DeepMind Control: `dmc/walker-walk`, `dmc/ball_in_cup-catch` (action repeat 2)
- `atari/<game>`       Atari 100k protocol: `atari/pong`, `atari/ms_pacman`, `atari/MsPacman`
- `toy/<task>`         tiny numpy tasks for tests: `toy/point`, `toy/point-pixels`, `toy/chain`, `toy/memory-<L>`

`make` returns a `gymnasium.vector.VectorEnv` with SAME_STEP autoreset: when env i ends, `step`
returns the first obs of its next episode in `obs[i]` and the last obs in `info["final_obs"][i]`
(mask `info["_final_obs"]`). Continuous actions are float32 in [-1, 1]; discrete actions are
`Discrete(n)`; observations are float32 vectors `[D]` or uint8 channel-first images `(C, H, W)`.
Env i is seeded with `seed + i` on its first reset (a later `reset(seed=s)` reseeds with `s + i`).

`make_single(name, seed, ...)` builds one wrapped (non-vector) env, e.g. for evaluation videos;
`check(name)` validates a name cheaply; `suite_defaults(suite)` gives per-suite defaults.
`vectorization="async"` runs one env per subprocess (forkserver start method: safe after the parent
rendered with EGL or touched CUDA; the main script must be importable, i.e. not fed on stdin).
"""
from __future__ import annotations

import functools
import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import gymnasium as gym  # noqa: E402
from mbrl.errors import UserError

SUITES = ("gym", "dmc", "atari", "toy")

_DEFAULTS = {
    # steps = default agent-step budget of a training run; action_repeat = env steps per agent step;
    # time_limit None = the suite's own episode length (episode_env_steps env steps where given).
    "gym": {"action_repeat": 1, "pixels": False, "size": 64, "time_limit": None, "steps": 1_000_000},
    "dmc": {"action_repeat": 2, "pixels": False, "size": 64, "time_limit": None, "episode_env_steps": 1000,
            "steps": 500_000},
    "atari": {"action_repeat": 4, "pixels": True, "size": 64, "time_limit": None, "episode_env_steps": 108_000,
              "steps": 100_000, "grayscale": False, "noop_max": 30, "life_loss_terminal": False},
    "toy": {"action_repeat": 1, "pixels": False, "size": 64, "time_limit": None, "steps": 5_000},
}




def parse(name: str) -> tuple[str, str]:
    """`"dmc/walker-walk"` -> `("dmc", "walker-walk")`; only the first `/` splits."""
    if not isinstance(name, str) or "/" not in name:
        raise UserError(f"env name must be 'suite/task', got {name!r}; valid suites: {', '.join(SUITES)}")
    suite, task = name.split("/", 1)
    if suite not in SUITES:
        raise UserError(f"unknown env suite {suite!r} in {name!r}; valid suites: {', '.join(SUITES)}")
    if not task:
        raise UserError(f"env name {name!r} has no task after '{suite}/'")
    return suite, task


def suite_defaults(suite: str) -> dict:
    """Per-suite defaults (action_repeat, pixels, size, time_limit in agent steps, steps budget, ...)."""
    if suite not in _DEFAULTS:
        raise UserError(f"unknown env suite {suite!r}; valid suites: {', '.join(SUITES)}")
    return dict(_DEFAULTS[suite])


def check(name: str) -> tuple[str, str]:
    """Validate a name without building the env (cheap); returns `parse(name)`."""
    suite, task = parse(name)
    if suite == "gym":
        from .gym_suite import check_gym_id

        check_gym_id(task)
    elif suite == "dmc":
        from .dmc import parse_dmc

        parse_dmc(task)
    elif suite == "atari":
        from .atari import game_name

        game_name(task)
    elif suite == "toy":
        from .toy import check_task

        check_task(task)
    return suite, task


def snapshot_safe(name: str, pixels: bool | None = None) -> bool:
    """Whether a vector env of `name` survives `pickle` with its exact state (so a checkpoint can hold the
    envs mid-episode and a resumed run continues the same episodes): the numpy toy tasks, gymnasium's
    classic-control tasks and dm_control's state-based tasks do; gymnasium's MuJoCo envs re-create a
    fresh simulator when unpickled and Atari's emulator does not pickle, so those resume with a reset."""
    suite, task = parse(name)
    if suite == "toy":
        return True
    if pixels:
        return False
    if suite == "dmc":
        return True
    if suite == "gym":
        try:
            entry = str(gym.spec(task).entry_point)
        except Exception:  # noqa: BLE001 (an unknown id is reported by check())
            return False
        return "classic_control" in entry or "toy_text" in entry
    return False


def make_single(name: str, seed: int | None = 0, *, pixels: bool | None = None, action_repeat: int | None = None,
                size: int = 64, time_limit: int | None = None, **kwargs) -> gym.Env:
    """One (non-vector) env with the same wrappers as `make`; seeded with `seed` on its first reset."""
    suite, task = parse(name)
    if suite == "gym":
        from .gym_suite import make_gym

        env = make_gym(task, pixels=pixels, size=size, action_repeat=action_repeat, time_limit=time_limit, **kwargs)
    elif suite == "dmc":
        from .dmc import DMCEnv

        env = DMCEnv(task, seed=seed, pixels=bool(pixels), size=size, action_repeat=action_repeat,
                     time_limit=time_limit, **kwargs)
    elif suite == "atari":
        from .atari import make_atari

        env = make_atari(task, pixels=pixels, size=size, action_repeat=action_repeat, time_limit=time_limit,
                         **kwargs)
    else:
        from .toy import make_toy
        from .wrappers import ActionRepeat, TimeLimit

        env = make_toy(task, pixels=pixels, size=size, **kwargs)
        if action_repeat is not None and int(action_repeat) > 1:
            env = ActionRepeat(env, int(action_repeat))
        if time_limit is not None:
            env = TimeLimit(env, int(time_limit))
    if suite in ("dmc", "toy"):
        from gymnasium import spaces

        from .wrappers import RescaleAction

        if isinstance(env.action_space, spaces.Box):
            env = RescaleAction(env)
    from .wrappers import SeedOnFirstReset

    return SeedOnFirstReset(env, seed)


def make(name: str, seed: int | None = 0, num_envs: int = 1, *, pixels: bool | None = None,
         action_repeat: int | None = None, size: int = 64, time_limit: int | None = None,
         vectorization: str = "sync", **kwargs) -> gym.vector.VectorEnv:
    """Build `num_envs` copies of env `name` as a SAME_STEP-autoreset vector env (see module doc)."""
    check(name)
    if int(num_envs) < 1:
        raise UserError(f"num_envs must be >= 1, got {num_envs}")
    if vectorization not in ("sync", "async"):
        raise UserError(f"vectorization must be 'sync' or 'async', got {vectorization!r}")
    seeds = [None if seed is None else int(seed) + i for i in range(int(num_envs))]
    fns = [functools.partial(make_single, name, s, pixels=pixels, action_repeat=action_repeat, size=size,
                             time_limit=time_limit, **kwargs) for s in seeds]
    mode = gym.vector.AutoresetMode.SAME_STEP
    if vectorization == "sync":
        env = gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)
    else:
        # forkserver: children never inherit a parent's EGL / CUDA state (fork after rendering hangs)
        env = gym.vector.AsyncVectorEnv(fns, autoreset_mode=mode, context="forkserver")
    if seed is not None:
        env.action_space.seed(int(seed))
        env.single_action_space.seed(int(seed))
        env.observation_space.seed(int(seed))
    return env


__all__ = ["SUITES", "parse", "check", "suite_defaults", "make", "make_single", "snapshot_safe"]
