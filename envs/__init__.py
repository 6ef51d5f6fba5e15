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


#: keywords `make` itself takes for every suite (beside the suite's own, see `kwarg_names`)
MAKE_KWARGS = ("pixels", "action_repeat", "size", "time_limit", "vectorization")
#: constructor arguments set from the env name or from `make`'s own keys, not for the user to pass
_SET_BY_MAKE = {"self", "task", "game", "seed"}


def _params(fn) -> tuple[list[str], bool]:
    """Keyword names of `fn` and whether it takes **kwargs."""
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return [], True
    names = [p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names, any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())


def kwarg_names(name: str) -> tuple[list[str], bool]:
    """The keyword arguments (`env_kwargs.<key>=`) env `name` accepts, and whether it also takes any
    other keyword (a gymnasium env whose constructor has **kwargs): `make`'s own keys plus those of the
    suite's constructor (the gymnasium env class, `DMCEnv`, `AtariEnv`, the toy task's class)."""
    suite, task = parse(name)
    extra: list[str] = []
    open_ended = False
    if suite == "gym":
        try:
            creator = gym.envs.registration.load_env_creator(gym.spec(task).entry_point)
        except Exception:  # noqa: BLE001 (an unknown id is reported by check())
            return list(MAKE_KWARGS), True
        if isinstance(creator, type):  # follow **kwargs up the class chain (Hopper -> MujocoEnv)
            open_ended = True
            for klass in creator.__mro__:
                if "__init__" not in vars(klass) or klass is object:
                    continue
                more, open_ended = _params(klass.__init__)
                extra += more
                if not open_ended:
                    break
        else:
            extra, open_ended = _params(creator)
        extra += ["disable_env_checker", "render_mode", "max_episode_steps"]
    elif suite == "dmc":
        from .dmc import DMCEnv

        extra, _ = _params(DMCEnv.__init__)
    elif suite == "atari":
        from .atari import AtariEnv

        extra, _ = _params(AtariEnv.__init__)
        extra = [k for k in extra if k != "frame_skip"]  # = action_repeat
    else:
        from .toy import ChainEnv, MemoryEnv, PointEnv, memory_length

        cls = {"point": PointEnv, "point-pixels": PointEnv, "chain": ChainEnv}.get(task, MemoryEnv)
        extra, _ = _params(cls.__init__)
        if memory_length(task) is not None:
            extra = [k for k in extra if k != "length"]  # given by the name (toy/memory-<L>)
    names = list(dict.fromkeys([*MAKE_KWARGS, *(k for k in extra if k not in _SET_BY_MAKE)]))
    return names, open_ended


def check_kwargs(name: str, kwargs: dict) -> None:
    """One line naming an unknown `env_kwargs` key of env `name` and listing the valid ones."""
    names, open_ended = kwarg_names(name)
    bad = [k for k in kwargs if k not in names]
    if bad and not open_ended:
        raise UserError(f"unknown env_kwargs key {bad[0]!r} for env={name}; valid: {', '.join(sorted(names))}")


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
    check_kwargs(name, kwargs)
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


__all__ = ["SUITES", "parse", "check", "suite_defaults", "make", "make_single", "snapshot_safe", "kwarg_names", "check_kwargs"]
