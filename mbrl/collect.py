"""Write D4RL-format datasets from policies of ours.

    python -m mbrl.collect env=gym/Hopper-v5 kind=medium policy=runs/sac/gym/Hopper-v5/<date> steps=100000 out=data/hopper-medium.hdf5
    python -m mbrl.collect env=toy/point kind=medium-replay policy=train train_steps=3000 out=data/point-medium-replay.hdf5

kind (as in D4RL):
  random         uniform actions
  medium, expert the policy's own (stochastic) actions, `steps` transitions; `policy=` is the medium /
                 expert checkpoint (a SAC run dir of `python -m mbrl.train algo=sac`), or `train` to
                 train one inline for `train_steps` env steps
  medium-replay  every transition seen while training a SAC inline for `train_steps` env steps
                 (needs policy=train; `steps` is ignored)
  medium-expert  `steps` from `policy=` then `steps` from `expert_policy=`
The file holds observations, next_observations, actions (in [-1, 1]), rewards, terminals, timeouts and
attributes env_name, kind, policy, seed, ref_min_score (a random policy's mean return over
`ref_episodes` episodes), ref_max_score (`ref_max=` or the (expert) policy's deterministic mean return),
policy_return, dataset_return_mean. `python -m mbrl.train env=d4rl/<file stem> dataset_path=<out> algo=...`
trains on it; hopper/halfcheetah/walker2d/ant file stems use the D4RL reference scores instead.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from mbrl.errors import UserError

KINDS = ("random", "medium", "expert", "medium-replay", "medium-expert")
DEFAULTS = dict(env=None, kind=None, policy="random", expert_policy=None, steps=100_000, train_steps=20_000, out=None, seed=0,
                ref_episodes=10, ref_max=None, threads=None, train_ratio=1.0, prefill=1000, hidden=256, batch_size=256)




def parse_args(argv: list[str]) -> dict:
    opts = dict(DEFAULTS)
    for a in argv:
        if "=" not in a:
            raise UserError(f"argument {a!r} is not key=value; valid keys: {', '.join(DEFAULTS)}")
        k, v = a.split("=", 1)
        if k not in DEFAULTS:
            raise UserError(f"unknown key {k!r}; valid: {', '.join(DEFAULTS)}")
        opts[k] = v
    for k in ("steps", "train_steps", "seed", "ref_episodes", "prefill", "hidden", "batch_size"):
        opts[k] = int(opts[k])
    opts["train_ratio"] = float(opts["train_ratio"])
    if opts["ref_max"] is not None:
        opts["ref_max"] = float(opts["ref_max"])
    if not opts["env"] or not opts["out"] or not opts["kind"]:
        raise UserError("env=, kind= and out= are required, e.g. env=gym/Hopper-v5 kind=medium policy=<run_dir>|train|random out=data/hopper-medium.hdf5")
    if opts["kind"] not in KINDS:
        raise UserError(f"unknown kind {opts['kind']!r}; valid: {', '.join(KINDS)}")
    if opts["kind"] == "medium-replay" and opts["policy"] != "train":
        raise UserError("kind=medium-replay records a training run: use policy=train (and train_steps=)")
    if opts["kind"] == "medium-expert" and not opts["expert_policy"]:
        raise UserError("kind=medium-expert needs expert_policy=<run_dir> (and policy=<medium run_dir>)")
    return opts


Policy = Callable[[np.ndarray, bool], np.ndarray]


def load_sac_policy(run_dir: str, obs_dim: int, act_dim: int) -> Policy:
    """The SAC policy of a `python -m mbrl.train algo=sac` run dir (config.yaml + checkpoints/latest.pt)."""
    from omegaconf import OmegaConf

    from mbrl.algos.common import to_dict
    from mbrl.learners.sac import SAC
    from mbrl.utils.checkpoint import load_checkpoint

    d = Path(run_dir)
    cfg_p, ck_p = d / "config.yaml", d / "checkpoints" / "latest.pt"
    if not cfg_p.is_file() or not ck_p.is_file():
        raise UserError(f"policy={run_dir}: not a SAC run dir (expected {cfg_p} and {ck_p}); valid: a run dir of algo=sac, 'train' or 'random'")
    cfg = OmegaConf.load(cfg_p)
    if str(cfg.algo.name) != "sac":
        raise UserError(f"policy={run_dir}: run of algo={cfg.algo.name}; only SAC run dirs are supported")
    # the learner's config (`learner:`; runs from before the learner group kept it under `algo.sac`)
    lcfg = {k: v for k, v in to_dict(cfg.get("learner") or cfg.algo.get("sac")).items() if k != "name" and v is not None}
    sac = SAC(obs_dim, act_dim, **lcfg)
    sac.load_state_dict(load_checkpoint(ck_p, map_location="cpu")["modules"]["learner"])
    return sac_policy(sac)


def sac_policy(sac) -> Policy:
    def pi(obs: np.ndarray, explore: bool) -> np.ndarray:
        with torch.no_grad():
            return sac.act(torch.as_tensor(obs, dtype=torch.float32), explore=explore).numpy()
    return pi


def rollout(env, policy: Optional[Policy], steps: int, seed: int, explore: bool = True, episodes: Optional[int] = None) -> dict:
    """Transitions from `policy` (None: uniform random) on a 1-env vector env, for `steps` steps or
    `episodes` complete episodes. Returns arrays and the returns of the completed episodes."""
    obs, _ = env.reset(seed=seed)
    out = {k: [] for k in ("obs", "action", "reward", "next_obs", "terminated", "truncated")}
    rets, ret, t = [], 0.0, 0
    env.action_space.seed(seed)
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
    data = {k: np.asarray(v) for k, v in out.items()}
    if len(data["truncated"]) and not (data["terminated"][-1] or data["truncated"][-1]):
        data["truncated"][-1] = True  # the recording ends here; so does the episode
    data["returns"] = np.asarray(rets)
    return data


def train_sac(env_name: str, opts: dict, log=print):
    """A SAC trained inline (the project's SAC learner and replay buffer); returns (sac, training stream)."""
    import envs
    from mbrl.data import ReplayBuffer
    from mbrl.learners.sac import SAC

    env = envs.make(env_name, seed=opts["seed"], num_envs=1)
    od, ad = env.single_observation_space.shape[0], env.single_action_space.shape[0]
    sac = SAC(od, ad, hidden=opts["hidden"])
    buf = ReplayBuffer.for_env(env, capacity=2 * opts["train_steps"] + 16, seed=opts["seed"])
    stream = {k: [] for k in ("obs", "action", "reward", "next_obs", "terminated", "truncated")}
    obs, _ = env.reset(seed=opts["seed"])
    env.action_space.seed(opts["seed"])
    is_first, budget, ret, t0 = np.ones(1, bool), 0.0, 0.0, time.time()
    for t in range(opts["train_steps"]):
        a = env.action_space.sample() if t < opts["prefill"] else sac_policy(sac)(obs, True)
        nobs, r, te, tr, info = env.step(a)
        done = te | tr
        real = nobs.copy()
        if done[0]:
            real[0] = info["final_obs"][0]
        buf.add(obs, a, r, real, te, tr, reset=is_first)
        for k, v in zip(stream, (obs[0], a[0], r[0], real[0], te[0], tr[0])):
            stream[k].append(v)
        ret += float(r[0])
        if done[0]:
            ret = 0.0
        obs, is_first = nobs, done
        if t >= opts["prefill"]:
            budget += opts["train_ratio"]
            while budget >= 1 and len(buf) >= opts["batch_size"]:
                sac.update(buf.sample(opts["batch_size"]))
                budget -= 1
        if (t + 1) % max(1, opts["train_steps"] // 10) == 0:
            log(f"train {t + 1}/{opts['train_steps']} steps ({time.time() - t0:.0f}s)")
    data = {k: np.asarray(v) for k, v in stream.items()}
    data["truncated"][-1] = not data["terminated"][-1]
    env.close()
    return sac, data


def collect(opts: dict, log=print) -> Path:
    import envs
    from mbrl.data.offline import write_d4rl

    if opts["threads"]:
        torch.set_num_threads(int(opts["threads"]))
    torch.manual_seed(opts["seed"])
    env = envs.make(opts["env"], seed=opts["seed"], num_envs=1)
    space = env.single_action_space
    if not hasattr(space, "shape") or len(space.shape) != 1 or hasattr(space, "n"):
        raise UserError(f"{opts['env']}: only continuous (Box) actions are supported, got {space}")
    od, ad = env.single_observation_space.shape[0], space.shape[0]
    kind, policy, stream = opts["kind"], None, None
    if kind != "random":
        if opts["policy"] == "train":
            policy_sac, stream = train_sac(opts["env"], opts, log)
            policy = sac_policy(policy_sac)
        elif opts["policy"] == "random":
            raise UserError(f"kind={kind} needs a policy: policy=<SAC run dir> or policy=train")
        else:
            policy = load_sac_policy(opts["policy"], od, ad)
    seed = opts["seed"]
    if kind == "random":
        data = rollout(env, None, opts["steps"], seed)
    elif kind == "medium-replay":
        data = stream
    elif kind in ("medium", "expert"):
        data = rollout(env, policy, opts["steps"], seed)
    else:  # medium-expert
        expert = load_sac_policy(opts["expert_policy"], od, ad)
        d1, d2 = rollout(env, policy, opts["steps"], seed), rollout(env, expert, opts["steps"], seed + 1)
        data = {k: np.concatenate([d1[k], d2[k]]) for k in d1}
    # reference returns: a random policy, and the (expert) policy evaluated deterministically
    ref_min = float(rollout(env, None, 0, seed + 100, episodes=opts["ref_episodes"])["returns"].mean())
    best = None
    if kind == "medium-expert":
        best = expert
    elif policy is not None:
        best = policy
    policy_return = float(rollout(env, best, 0, seed + 200, explore=False, episodes=opts["ref_episodes"])["returns"].mean()) if best else ref_min
    ref_max = opts["ref_max"] if opts["ref_max"] is not None else (policy_return if best is not None else None)
    ends = np.flatnonzero(data["terminated"] | data["truncated"])
    cs = np.concatenate([[0.0], np.cumsum(data["reward"])])
    ep_rets = cs[ends + 1] - cs[np.concatenate([[0], ends[:-1] + 1])]
    attrs = dict(env_name=opts["env"], kind=kind, policy=str(opts["policy"]), seed=seed, random_return=ref_min,
                 dataset_return_mean=float(ep_rets.mean()) if len(ep_rets) else 0.0, num_episodes=int(len(ends)), collector="mbrl.collect")
    if best is not None:
        attrs["policy_return"] = policy_return
    if ref_max is not None:  # without an expert return (kind=random, no ref_max=) there is no normalised score
        attrs.update(ref_min_score=ref_min, ref_max_score=float(ref_max))
    path = write_d4rl(opts["out"], data["obs"], data["action"].astype(np.float32), data["reward"], data["next_obs"], data["terminated"], data["truncated"], attrs)
    env.close()
    log(f"wrote {path}: {len(data['reward'])} transitions, {len(ends)} episodes, mean episode return {attrs['dataset_return_mean']:.2f} "
        f"(random policy {ref_min:.2f}, ref max {ref_max if ref_max is not None else 'none: pass ref_max='})")
    return path


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
