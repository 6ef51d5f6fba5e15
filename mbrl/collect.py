"""Write D4RL-format datasets from policies of ours.

    python -m mbrl.collect env=gym/Hopper-v5 kind=medium policy=runs/sac/gym/Hopper-v5/<date> steps=100000 out=data/hopper-medium-v5.hdf5
    python -m mbrl.collect env=toy/point kind=medium-replay train_steps=3000 target_return=-20 out=data/point-medium-replay.hdf5

Every D4RL kind of every listed env, from seeds, in one command (the files and policies go into the folder `out=`):

    python -m mbrl.collect kind=all env=gym/Hopper-v5,gym/HalfCheetah-v5,gym/Walker2d-v5 out=data/d4rl/ \\
        expert_train_steps=1000000 train_steps=1000000 steps=1000000 seed=0

kind (as D4RL defines them, Fu et al. 2020, sec. 5 and appendix C):
  random         uniform actions, `steps` transitions
  expert         `steps` transitions of the policy's own (stochastic) actions; `policy=` is a SAC run dir
                 (of `python -m mbrl.train algo=sac`, or a policy saved here), or `train` to train one
                 inline for `train_steps` env steps
  medium         as expert, from a policy at about one third of the expert's return: `policy=<dir>`, or
                 `policy=train`, which stops training at the first evaluation reaching `target_return=`
                 (or ref_min + `target_frac` x (expert - ref_min), the expert's return measured from
                 `expert_policy=` or given as `ref_max=`)
  medium-replay  every transition of the training run up to that medium policy (policy=train, the default;
                 `steps` is ignored). `replay_from=<SAC run dir>` starts from an existing run: its replay
                 buffer and SAC, trained on for up to `train_steps` more env steps (0: just the buffer).
                 The trained policy is saved (`save_policy=`, default <out stem>.policy/), with its buffer.
  medium-expert  the concatenation of a medium and an expert dataset: `parts=<medium.hdf5>,<expert.hdf5>`,
                 or `steps` from `policy=` then `steps` from `expert_policy=`
  all            every kind above for each env of a comma-separated `env=`: an expert SAC trained for
                 `expert_train_steps` (D4RL: to completion), a second SAC run from scratch stopped at
                 `target_frac` of the expert's return (its replay: medium-replay; its policy: medium),
                 then medium-expert and random. Files <task>-<kind>-v<N>.hdf5 (e.g. hopper-medium-v5.hdf5)
                 and policies <task>-{expert,medium}-v<N>.policy/ in the folder `out=`.
Other keys: overwrite=true replaces existing files (refused otherwise), progress=false hides the progress
bars, eval_every / eval_episodes (deterministic evaluations while training), seed, threads, train_ratio,
prefill, hidden, batch_size (the inline SAC), ref_episodes, ref_max.

The file holds observations (float32, or uint8 for pixels), next_observations, actions (in [-1, 1]),
rewards, terminals, timeouts and attributes env_name, kind, policy, seed, ref_min_score (a random policy's
mean return over `ref_episodes` episodes), ref_max_score (`ref_max=` or the expert's deterministic mean
return), policy_return, dataset_return_mean. `python -m mbrl.train env=d4rl/<file stem> dataset_path=<out>
algo=...` trains on it; hopper/halfcheetah/walker2d/ant file stems use the D4RL reference scores instead.
"""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from mbrl.errors import UserError

KINDS = ("random", "medium", "expert", "medium-replay", "medium-expert", "all")
DEFAULTS = dict(env=None, kind=None, out=None, overwrite=False, policy=None, expert_policy=None, parts=None, replay_from=None,
                save_policy=None, steps=100_000, train_steps=20_000, expert_train_steps=None, target_return=None, target_frac=None,
                eval_every=5000, eval_episodes=5, seed=0, ref_episodes=10, ref_max=None, threads=None, train_ratio=1.0, prefill=1000,
                hidden=256, batch_size=256, progress=True)
INTS = {"steps": 1, "train_steps": 0, "expert_train_steps": 0, "seed": 0, "ref_episodes": 1, "prefill": 0, "hidden": 1, "batch_size": 1,
        "eval_every": 1, "eval_episodes": 1, "threads": 1}
FLOATS = ("train_ratio", "ref_max", "target_return", "target_frac")
BOOLS = ("overwrite", "progress")
#: D4RL's "medium": a policy at about one third of the expert's performance
MEDIUM_FRAC = 1.0 / 3.0


def _bool(k: str, v) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).lower()
    if s in ("true", "1", "yes"):
        return True
    if s in ("false", "0", "no"):
        return False
    raise UserError(f"{k}={v}; valid: true or false")


def parse_args(argv: list[str]) -> dict:
    opts = dict(DEFAULTS)
    for a in argv:
        if "=" not in a:
            raise UserError(f"argument {a!r} is not key=value; valid keys: {', '.join(DEFAULTS)}")
        k, v = a.split("=", 1)
        if k not in DEFAULTS:
            raise UserError(f"unknown key {k!r}; valid: {', '.join(DEFAULTS)}")
        opts[k] = None if v in ("null", "none", "None") else v
    for k, lo in INTS.items():
        if opts[k] is None:
            continue
        try:
            opts[k] = int(str(opts[k]))
        except ValueError:
            raise UserError(f"{k}={opts[k]}; valid: an integer >= {lo}") from None
        if opts[k] < lo:
            raise UserError(f"{k}={opts[k]}; valid: an integer >= {lo}")
    for k in FLOATS:
        if opts[k] is not None:
            try:
                opts[k] = float(opts[k])
            except ValueError:
                raise UserError(f"{k}={opts[k]}; valid: a number") from None
    if opts["train_ratio"] <= 0:
        raise UserError(f"train_ratio={opts['train_ratio']}; valid: a number > 0 (gradient updates per env step)")
    if opts["target_frac"] is not None and not 0 < opts["target_frac"] <= 1:
        raise UserError(f"target_frac={opts['target_frac']}; valid: 0 < target_frac <= 1 (D4RL's medium: 1/3)")
    for k in BOOLS:
        opts[k] = _bool(k, opts[k])
    if not opts["env"] or not opts["out"] or not opts["kind"]:
        raise UserError("env=, kind= and out= are required, e.g. env=gym/Hopper-v5 kind=medium policy=<run_dir>|train out=data/hopper-medium-v5.hdf5")
    kind = opts["kind"]
    if kind not in KINDS:
        raise UserError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    if "," in opts["env"] and kind != "all":
        raise UserError(f"env={opts['env']} names several envs; only kind=all takes a list")
    if kind == "medium-replay":
        if opts["policy"] not in (None, "train"):
            raise UserError("kind=medium-replay records a training run: use policy=train (the default) or replay_from=<SAC run dir>")
        opts["policy"] = "train"
    elif opts["replay_from"]:
        raise UserError(f"replay_from= is for kind=medium-replay (got kind={kind})")
    if kind == "medium-expert" and not opts["parts"] and not (opts["policy"] and opts["expert_policy"]):
        raise UserError("kind=medium-expert needs parts=<medium.hdf5>,<expert.hdf5> or policy=<medium run dir> expert_policy=<expert run dir>")
    if kind in ("medium", "expert") and not opts["policy"]:
        raise UserError(f"kind={kind} needs a policy: policy=<SAC run dir> or policy=train")
    if opts["parts"] and kind != "medium-expert":
        raise UserError(f"parts= is for kind=medium-expert (got kind={kind})")
    if kind == "all" and not Path(opts["out"]).suffix == "" and not Path(opts["out"]).is_dir():
        raise UserError(f"kind=all writes several files: out= must be a folder (got {opts['out']})")
    return opts


# ------------------------------------------------------------------------------------------ paths

def dataset_stem(env_name: str, kind: str) -> str:
    """`gym/Hopper-v5`, medium -> `hopper-medium-v5` (D4RL's naming, with the gymnasium env's version)."""
    task = env_name.split("/", 1)[-1]
    m = re.match(r"^(.*?)-v(\d+)$", task)
    base, ver = (m.group(1), f"-v{m.group(2)}") if m else (task, "")
    return f"{base.replace('/', '-').lower()}-{kind}{ver}"


def out_path(out: str, env_name: str, kind: str) -> Path:
    """`out=` as a file, or a folder (an existing one, or a name ending in /) that gets <stem>.hdf5."""
    p = Path(out).expanduser()
    if p.is_dir() or str(out).endswith(("/", "\\")):
        return p / f"{dataset_stem(env_name, kind)}.hdf5"
    return p


def refuse_existing(paths: list[Path], overwrite: bool) -> None:
    for p in paths:
        if p.exists() and not overwrite:
            raise UserError(f"{p} exists; pass overwrite=true to replace it (or choose another out=)")


def planned_outputs(opts: dict) -> list[Path]:
    """Every path the collection will write (checked before any training starts)."""
    if opts["kind"] == "all":
        out = []
        for env_name in opts["env"].split(","):
            for kind in ("expert", "medium-replay", "medium", "medium-expert", "random"):
                out.append(out_path(opts["out"].rstrip("/") + "/", env_name, kind))
            for which in ("expert", "medium"):
                if which == "medium" or not opts["expert_policy"]:
                    out.append(policy_dir(out_path(opts["out"].rstrip("/") + "/", env_name, which), None))
        return out
    path = out_path(opts["out"], opts["env"], opts["kind"])
    out = [path]
    if opts["kind"] == "medium-replay":
        out.append(policy_dir(path, opts["save_policy"]))
    return out


def policy_dir(dataset: Path, save_policy: Optional[str]) -> Path:
    return Path(save_policy).expanduser() if save_policy else dataset.with_name(dataset.stem + ".policy")


# ------------------------------------------------------------------------------------------ policies

Policy = Callable[[np.ndarray, bool], np.ndarray]


def sac_policy(sac) -> Policy:
    def pi(obs: np.ndarray, explore: bool) -> np.ndarray:
        with torch.no_grad():
            return sac.act(torch.as_tensor(obs, dtype=torch.float32), explore=explore).numpy()
    return pi


def learner_config(hidden: Optional[int] = None) -> dict:
    """The SAC learner's keys from configs/learner/sac.yaml (the project's one source of SAC settings)."""
    from omegaconf import OmegaConf

    from mbrl.config import load_group

    cfg = {k: v for k, v in OmegaConf.to_container(load_group("learner", "sac"), resolve=True).items() if k != "name" and v is not None}
    if hidden is not None:
        cfg["hidden"] = int(hidden)
    return cfg


def check_run_dir(run_dir: str) -> tuple[Path, Path]:
    d = Path(run_dir).expanduser()
    cfg_p, ck_p = d / "config.yaml", d / "checkpoints" / "latest.pt"
    if not cfg_p.is_file() or not ck_p.is_file():
        raise UserError(f"{run_dir}: not a SAC run dir (expected {cfg_p} and {ck_p}); valid: a run dir of algo=sac, a saved policy, 'train'")
    return cfg_p, ck_p


def load_sac_run(run_dir: str, env_name: str, obs_dim: int, act_dim: int, with_buffer: bool = False):
    """(SAC, checkpoint, learner cfg, buffer or None) of a SAC run dir: config.yaml + checkpoints/latest.pt
    (a `python -m mbrl.train algo=sac` run, or a policy saved by this module)."""
    from omegaconf import OmegaConf

    from mbrl.algos.common import to_dict
    from mbrl.learners.sac import SAC
    from mbrl.utils.checkpoint import load_checkpoint

    cfg_p, ck_p = check_run_dir(run_dir)
    cfg = OmegaConf.load(cfg_p)
    if str(cfg.algo.name) != "sac":
        raise UserError(f"{run_dir}: run of algo={cfg.algo.name}; only SAC run dirs are supported")
    if str(cfg.get("env")) != env_name:
        raise UserError(f"{run_dir}: a policy for env={cfg.get('env')}, not env={env_name}; use a run of env={env_name}")
    # the learner's config (`learner:`; runs from before the learner group kept it under `algo.sac`)
    lcfg = {k: v for k, v in to_dict(cfg.get("learner") or cfg.algo.get("sac")).items() if k != "name" and v is not None}
    sac = SAC(obs_dim, act_dim, **lcfg)
    ckpt = load_checkpoint(ck_p, map_location="cpu")
    try:
        sac.load_state_dict(ckpt["modules"]["learner"])
    except (KeyError, RuntimeError) as e:
        raise UserError(f"{ck_p}: the SAC weights do not fit env={env_name} (obs {obs_dim}, action {act_dim}): {str(e).splitlines()[0][:120]}") from None
    buf = None
    if with_buffer:
        from mbrl.data import ReplayBuffer

        if not ckpt.get("buffer_file"):
            raise UserError(f"{run_dir}: the run saved no replay buffer (train it with save_buffer=true); replay_from= needs one")
        buf = ReplayBuffer.load(ck_p.parent / ckpt["buffer_file"])
    return sac, ckpt, lcfg, buf


def load_sac_policy(run_dir: str, obs_dim: int, act_dim: int, env_name: Optional[str] = None) -> Policy:
    """The SAC policy of a SAC run dir (see `load_sac_run`)."""
    from omegaconf import OmegaConf

    if env_name is None:  # callers that do not know the env: take the run's own
        p = Path(run_dir).expanduser() / "config.yaml"
        env_name = str(OmegaConf.load(p).get("env")) if p.is_file() else ""
    return sac_policy(load_sac_run(run_dir, env_name, obs_dim, act_dim)[0])


def save_sac_run(directory: Path, sac, lcfg: dict, env_name: str, buffer, env_steps: int, info: dict) -> Path:
    """A SAC run dir that `policy=`, `expert_policy=` and `replay_from=` accept: config.yaml, checkpoints/latest.pt
    (the learner with its optimisers) and the replay buffer; written into a temp folder, then renamed."""
    import shutil

    from omegaconf import OmegaConf

    from mbrl.utils.checkpoint import save_checkpoint

    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "checkpoints").mkdir(parents=True)
    try:
        OmegaConf.save(OmegaConf.create({"env": env_name, "algo": {"name": "sac"}, "learner": {"name": "sac", **lcfg},
                                         "collector": {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in info.items()}}),
                       tmp / "config.yaml")
        buffer_file = f"buffer_{env_steps}.npz"
        buffer.save(tmp / "checkpoints" / buffer_file)
        save_checkpoint({"algo": "sac", "modules": {"learner": sac.state_dict()}, "counters": {"env_steps": int(env_steps)},
                         "buffer_file": buffer_file}, tmp / "checkpoints" / "latest.pt")
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


# ------------------------------------------------------------------------------------------ rollouts

STREAM = ("obs", "action", "reward", "next_obs", "terminated", "truncated")


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=not enabled, file=sys.stderr, dynamic_ncols=True, smoothing=0.05, mininterval=1.0)


def rollout(env, policy: Optional[Policy], steps: int, seed: int, explore: bool = True, episodes: Optional[int] = None,
            progress: bool = False, desc: str = "collect") -> dict:
    """Transitions from `policy` (None: uniform random) on a 1-env vector env, for `steps` steps or
    `episodes` complete episodes. Returns arrays and the returns of the completed episodes."""
    obs, _ = env.reset(seed=seed)
    out = {k: [] for k in STREAM}
    rets, ret, t = [], 0.0, 0
    env.action_space.seed(seed)
    bar = _bar(steps if episodes is None else 0, desc, progress and episodes is None)
    while (episodes is None and t < steps) or (episodes is not None and len(rets) < episodes):
        a = env.action_space.sample() if policy is None else policy(obs, explore)
        nobs, r, te, tr, info = env.step(a)
        real = nobs.copy()
        if te[0] or tr[0]:
            real[0] = info["final_obs"][0]
        for k, v in zip(out, (obs[0], a[0], r[0], real[0], te[0], tr[0])):
            out[k].append(v)
        ret += float(r[0])
        if te[0] or tr[0]:
            rets.append(ret)
            ret = 0.0
        obs, t = nobs, t + 1
        bar.update(1)
    bar.close()
    data = {k: np.asarray(v) for k, v in out.items()}
    if len(data["truncated"]) and not (data["terminated"][-1] or data["truncated"][-1]):
        data["truncated"][-1] = True  # the recording ends here; so does the episode
    data["returns"] = np.asarray(rets)
    return data


def evaluate(env_name: str, policy: Optional[Policy], episodes: int, seed: int) -> float:
    """Mean return of `episodes` episodes, one per env of a vector env, deterministic actions."""
    from mbrl import envs

    env = envs.make(env_name, seed=seed, num_envs=episodes)
    obs, _ = env.reset(seed=seed)
    ret, done = np.zeros(episodes), np.zeros(episodes, bool)
    while not done.all():
        a = np.stack([env.single_action_space.sample() for _ in range(episodes)]) if policy is None else policy(obs, False)
        obs, r, te, tr, _ = env.step(a)
        ret += np.where(done, 0.0, r)
        done |= te | tr
    env.close()
    return float(ret.mean())


def buffer_stream(buf) -> dict:
    """Every transition of a replay buffer as a time-ordered stream (episodes contiguous; a jump between
    stored episodes, a stream's end or an overwritten start closes the episode before it as truncated)."""
    b = buf.all_transitions()
    d = {k: b[k].cpu().numpy() for k in STREAM}
    first = b["is_first"].cpu().numpy().astype(bool)
    n = len(d["reward"])
    cont = np.zeros(n, bool)
    if n > 1:
        cont[:-1] = ~first[1:] & np.all((d["obs"][1:] == d["next_obs"][:-1]).reshape(n - 1, -1), axis=1)
    d["terminated"] = d["terminated"].astype(bool)
    d["truncated"] = (d["truncated"].astype(bool) | ~cont) & ~d["terminated"]
    return d


def train_sac(env_name: str, opts: dict, log=print, target: Optional[float] = None, train_steps: Optional[int] = None, seed: Optional[int] = None,
              start: Optional[tuple] = None, desc: str = "train SAC"):
    """A SAC trained inline (the project's SAC learner and replay buffer) for up to `train_steps` env steps,
    stopping at the first deterministic evaluation (every `eval_every` steps) whose return reaches `target`.
    `start`: (sac, learner cfg, replay buffer, env steps) of an existing run to continue from; its buffer's
    transitions open the returned stream. Returns (sac, stream of every transition, buffer, info)."""
    from mbrl import envs
    from mbrl.data import ReplayBuffer
    from mbrl.learners.sac import SAC

    seed = opts["seed"] if seed is None else seed
    steps = opts["train_steps"] if train_steps is None else train_steps
    env = envs.make(env_name, seed=seed, num_envs=1)
    od, ad = env.single_observation_space.shape[0], env.single_action_space.shape[0]
    stream = {k: [] for k in STREAM}
    t0_env = 0
    if start is not None:
        sac, lcfg, old, t0_env = start
        old_stream = buffer_stream(old)
        buf = ReplayBuffer.for_env(env, capacity=2 * (len(old_stream["reward"]) + steps) + 16, seed=seed)  # an entry per transition + one per episode start
        buf.add_batch(old_stream["obs"], old_stream["action"], old_stream["reward"], old_stream["next_obs"], old_stream["terminated"],
                      old_stream["truncated"])
        prefill = 0
    else:
        lcfg = learner_config(opts["hidden"])
        torch.manual_seed(seed)
        sac = SAC(od, ad, **lcfg)
        buf = ReplayBuffer.for_env(env, capacity=2 * steps + 16, seed=seed)
        old_stream, prefill = None, opts["prefill"]
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    is_first, budget, t0 = np.ones(1, bool), 0.0, time.time()
    pi = sac_policy(sac)
    evals: list[tuple[int, float]] = []
    reached = None
    bar = _bar(steps, desc, opts["progress"])
    t = 0
    for t in range(steps):
        a = env.action_space.sample() if t < prefill else pi(obs, True)
        nobs, r, te, tr, info = env.step(a)
        done = te | tr
        real = nobs.copy()
        if done[0]:
            real[0] = info["final_obs"][0]
        buf.add(obs, a, r, real, te, tr, reset=is_first)
        for k, v in zip(stream, (obs[0], a[0], r[0], real[0], te[0], tr[0])):
            stream[k].append(v)
        obs, is_first = nobs, done
        if t >= prefill:
            budget += opts["train_ratio"]
            while budget >= 1 and len(buf) >= opts["batch_size"]:
                sac.update(buf.sample(opts["batch_size"]))
                budget -= 1
        bar.update(1)
        if (t + 1) % opts["eval_every"] == 0 or t + 1 == steps:
            ret = evaluate(env_name, pi, opts["eval_episodes"], seed + 1000)
            evals.append((t0_env + t + 1, ret))
            bar.set_postfix(eval=f"{ret:.1f}", refresh=False)
            log(f"{desc}: {t0_env + t + 1} env steps, eval return {ret:.1f} ({time.time() - t0:.0f}s)")
            if target is not None and ret >= target:
                reached = t0_env + t + 1
                break
    bar.close()
    env.close()
    data = {k: np.asarray(v) for k, v in stream.items()}
    if steps and len(data["reward"]):
        data["truncated"][-1] = not data["terminated"][-1]
    if old_stream is not None:
        data = {k: np.concatenate([old_stream[k], data[k]]) if len(data["reward"]) else old_stream[k] for k in STREAM}
    if target is not None and reached is None:
        log(f"{desc}: the target return {target:.1f} was not reached in {steps} env steps (last eval {evals[-1][1] if evals else float('nan'):.1f}); "
            f"the dataset uses the last policy")
    info = dict(env_steps=t0_env + (t + 1 if steps else 0), target_return=target, reached_at=reached, evals=evals, seed=seed,
                wall_s=round(time.time() - t0, 1))
    return sac, data, buf, lcfg, info


# ------------------------------------------------------------------------------------------ writing

def episode_returns(data: dict) -> np.ndarray:
    ends = np.flatnonzero(data["terminated"] | data["truncated"])
    cs = np.concatenate([[0.0], np.cumsum(data["reward"], dtype=np.float64)])
    return cs[ends + 1] - cs[np.concatenate([[0], ends[:-1] + 1])] if len(ends) else np.zeros(0)


def write(path: Path, data: dict, attrs: dict, log) -> Path:
    from mbrl.data.offline import write_d4rl

    rets = episode_returns(data)
    attrs = dict(attrs, dataset_return_mean=float(rets.mean()) if len(rets) else 0.0, num_episodes=int(len(rets)), collector="mbrl.collect")
    obs = data["obs"]
    path = write_d4rl(path, obs, data["action"].astype(np.float32), data["reward"], data["next_obs"], data["terminated"], data["truncated"], attrs)
    log(f"wrote {path}: {len(data['reward'])} transitions, {len(rets)} episodes, mean episode return {attrs['dataset_return_mean']:.2f} "
        f"(random policy {attrs.get('random_return', float('nan')):.2f}, ref max {attrs.get('ref_max_score', 'none: pass ref_max=')})")
    return path


def _ref_attrs(ref_min: float, ref_max: Optional[float]) -> dict:
    # without an expert return (kind=random, no ref_max=) there is no normalised score
    return {} if ref_max is None else dict(ref_min_score=float(ref_min), ref_max_score=float(ref_max))


def _concat(*parts: dict) -> dict:
    return {k: np.concatenate([p[k] for p in parts]) for k in STREAM}


def _env_dims(env_name: str, seed: int, need_policy: bool):
    from mbrl import envs

    env = envs.make(env_name, seed=seed, num_envs=1)
    space = env.single_action_space
    if not hasattr(space, "shape") or len(space.shape) != 1 or hasattr(space, "n"):
        env.close()
        raise UserError(f"{env_name}: only continuous (Box) actions are supported, got {space}")
    obs_shape = env.single_observation_space.shape
    if need_policy and len(obs_shape) != 1:
        env.close()
        raise UserError(f"{env_name}: observations of shape {obs_shape}; the SAC policies here act on vector observations (kind=random works on pixels)")
    return env, int(np.prod(obs_shape)), int(space.shape[0])


def _load_parts(parts: str) -> dict:
    from mbrl.data.offline import load_d4rl

    files = [p for p in parts.split(",") if p]
    if len(files) < 2:
        raise UserError(f"parts={parts}: give two or more D4RL files, e.g. parts=data/hopper-medium-v5.hdf5,data/hopper-expert-v5.hdf5")
    sets = [load_d4rl(f) for f in files]
    env_names = {s.metadata.get("env_name") for s in sets}
    if len(env_names) > 1:
        raise UserError(f"parts={parts}: the files are from different envs {sorted(map(str, env_names))}")
    data = _concat(*({"obs": s.obs, "action": s.action, "reward": s.reward, "next_obs": s.next_obs, "terminated": s.terminated,
                      "truncated": s.truncated} for s in sets))
    return data, sets


def collect(opts: dict, log=print) -> list[Path]:
    """Write the dataset(s) that `opts` (see `parse_args`) describe; returns the paths written."""
    if opts["threads"]:
        torch.set_num_threads(int(opts["threads"]))
    for k in ("policy", "expert_policy", "replay_from"):
        if opts[k] and opts[k] not in ("train", "random"):
            check_run_dir(opts[k])
    refuse_existing(planned_outputs(opts), opts["overwrite"])
    if opts["kind"] == "all":
        return [p for env_name in opts["env"].split(",") for p in collect_all(dict(opts, env=env_name), log)]
    torch.manual_seed(opts["seed"])
    kind, seed, env_name = opts["kind"], opts["seed"], opts["env"]
    path = out_path(opts["out"], env_name, kind)
    if kind == "medium-expert" and opts["parts"]:
        data, sets = _load_parts(opts["parts"])
        a0 = sets[-1].metadata
        attrs = {k: a0[k] for k in ("env_name", "random_return", "ref_min_score", "ref_max_score", "policy_return") if k in a0}
        attrs.update(kind=kind, policy=",".join(str(s.metadata.get("policy", "")) for s in sets), parts=opts["parts"], seed=seed)
        return [write(path, data, attrs, log)]
    env, od, ad = _env_dims(env_name, seed, kind != "random")
    ref_min = evaluate_random(env, opts)
    policy, best, expert_return, info = None, None, None, {}
    if opts["expert_policy"]:
        best = load_sac_policy(opts["expert_policy"], od, ad, env_name)
        expert_return = evaluate(env_name, best, opts["ref_episodes"], seed + 200)
    if kind == "random":
        data = rollout(env, None, opts["steps"], seed, progress=opts["progress"])
    elif opts["policy"] == "train":
        target = opts["target_return"]
        if target is None and opts["target_frac"] is not None:
            top = expert_return if expert_return is not None else opts["ref_max"]
            if top is None:
                raise UserError("target_frac= needs the expert's return: expert_policy=<run dir> or ref_max=<expert return>")
            target = ref_min + opts["target_frac"] * (top - ref_min)
        start = None
        if opts["replay_from"]:
            sac0, ck, lcfg0, buf0 = load_sac_run(opts["replay_from"], env_name, od, ad, with_buffer=True)
            start = (sac0, lcfg0, buf0, int(ck.get("counters", {}).get("env_steps", len(buf0))))
        sac, stream, buf, lcfg, info = train_sac(env_name, opts, log, target=target, start=start)
        policy = sac_policy(sac)
        if kind == "medium-replay":
            data = stream
            d = save_sac_run(policy_dir(path, opts["save_policy"]), sac, lcfg, env_name, buf, info["env_steps"],
                             dict(kind=kind, seed=seed, target_return=target, reached_at=info["reached_at"], replay_from=opts["replay_from"]))
            log(f"saved the policy (and its replay buffer) to {d}")
            info["saved_policy"] = str(d)
        else:
            data = rollout(env, policy, opts["steps"], seed, progress=opts["progress"])
    else:
        policy = load_sac_policy(opts["policy"], od, ad, env_name)
        data = rollout(env, policy, opts["steps"], seed, progress=opts["progress"])
    if kind == "medium-expert":
        d2 = rollout(env, best, opts["steps"], seed + 1, progress=opts["progress"])
        data = _concat(data, d2)
    if kind == "expert":
        best = policy
    policy_return = evaluate(env_name, policy, opts["ref_episodes"], seed + 200) if policy is not None else None
    if best is policy:
        expert_return = policy_return
    ref_max = opts["ref_max"] if opts["ref_max"] is not None else expert_return
    attrs = dict(env_name=env_name, kind=kind, policy=str(opts["policy"] or "random"), seed=seed, random_return=ref_min, **_ref_attrs(ref_min, ref_max))
    if policy_return is not None:
        attrs["policy_return"] = policy_return
    if info:
        attrs.update(train_env_steps=info["env_steps"], train_evals=[list(e) for e in info["evals"]])
        if info.get("target_return") is not None:
            attrs["target_return"] = info["target_return"]
    env.close()
    return [write(path, data, attrs, log)]


def evaluate_random(env, opts: dict) -> float:
    return float(rollout(env, None, 0, opts["seed"] + 100, episodes=opts["ref_episodes"])["returns"].mean())


def collect_all(opts: dict, log) -> list[Path]:
    """Every D4RL kind for one env (see the module docstring, kind=all)."""
    env_name, seed, folder = opts["env"], opts["seed"], opts["out"].rstrip("/") + "/"
    env, od, ad = _env_dims(env_name, seed, True)
    p = {k: out_path(folder, env_name, k) for k in ("expert", "medium", "medium-replay", "medium-expert", "random")}
    ref_min = evaluate_random(env, opts)
    # 1. the expert: a SAC trained to completion (D4RL), or the given one
    if opts["expert_policy"]:
        expert = load_sac_policy(opts["expert_policy"], od, ad, env_name)
        expert_src = opts["expert_policy"]
    else:
        steps = opts["expert_train_steps"] if opts["expert_train_steps"] is not None else opts["train_steps"]
        sac, _, buf, lcfg, info = train_sac(env_name, opts, log, train_steps=steps, seed=seed, desc=f"{env_name} expert SAC")
        expert_src = str(save_sac_run(policy_dir(p["expert"], None), sac, lcfg, env_name, buf, info["env_steps"], dict(kind="expert", seed=seed)))
        expert = sac_policy(sac)
    expert_return = evaluate(env_name, expert, opts["ref_episodes"], seed + 200)
    ref_max = opts["ref_max"] if opts["ref_max"] is not None else expert_return
    refs = dict(env_name=env_name, seed=seed, random_return=ref_min, expert_return=expert_return, **_ref_attrs(ref_min, ref_max))
    out = []
    d_expert = rollout(env, expert, opts["steps"], seed + 1, progress=opts["progress"], desc="expert data")
    out.append(write(p["expert"], d_expert, dict(refs, kind="expert", policy=expert_src, policy_return=expert_return), log))
    # 2. a second SAC run from scratch, stopped at `target_frac` of the expert: its replay and its policy
    frac = opts["target_frac"] if opts["target_frac"] is not None else MEDIUM_FRAC
    target = opts["target_return"] if opts["target_return"] is not None else ref_min + frac * (expert_return - ref_min)
    sac, stream, buf, lcfg, info = train_sac(env_name, opts, log, target=target, seed=seed + 1, desc=f"{env_name} medium SAC")
    medium_src = str(save_sac_run(policy_dir(p["medium"], None), sac, lcfg, env_name, buf, info["env_steps"],
                                  dict(kind="medium", seed=seed + 1, target_return=target, reached_at=info["reached_at"])))
    medium = sac_policy(sac)
    medium_return = evaluate(env_name, medium, opts["ref_episodes"], seed + 200)
    train_attrs = dict(target_return=target, train_env_steps=info["env_steps"], train_evals=[list(e) for e in info["evals"]])
    out.append(write(p["medium-replay"], stream, dict(refs, kind="medium-replay", policy=medium_src, policy_return=medium_return, **train_attrs), log))
    d_medium = rollout(env, medium, opts["steps"], seed + 2, progress=opts["progress"], desc="medium data")
    out.append(write(p["medium"], d_medium, dict(refs, kind="medium", policy=medium_src, policy_return=medium_return, **train_attrs), log))
    # 3. medium-expert: the concatenation (D4RL); 4. random
    out.append(write(p["medium-expert"], _concat(d_medium, d_expert), dict(refs, kind="medium-expert", policy=f"{medium_src},{expert_src}"), log))
    out.append(write(p["random"], rollout(env, None, opts["steps"], seed + 3, progress=opts["progress"], desc="random data"),
                     dict(refs, kind="random", policy="random"), log))
    env.close()
    return out


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        collect(parse_args(argv), log=lambda s: print(s, file=sys.stderr))
    except UserError as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
