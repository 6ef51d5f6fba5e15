"""PETS side by side with mbrl-lib 0.2.0 at mbrl-lib's PETS cart-pole configuration.

`python -m mbrl.bench pets [--trials 10] [--peer-trials 10] [--speed-only]`

Configuration (both libraries): ensemble of 5 Gaussian MLPs with 3 hidden layers of 200,
CEM population 500, 5 iterations, 10% elites, alpha 0.1, horizon 15, 20 particles, TS∞
(mbrl-lib `fixed_model`), one random trial then one model fit before each trial, trials of 200
steps on mbrl-lib's continuous cart-pole. mbrl-lib is given the true reward and termination
functions (as in its example); ours learns reward and termination.

1. ms per planned action: the same planning call timed for both, after one fit on a random trial.
2. return per trial for `--trials` (ours) / `--peer-trials` (mbrl-lib) trials.
Our cart-pole is a port of `mbrl.env.cartpole_continuous` (same equations, constants, reset
distribution, termination and reward); the benchmark checks it against mbrl-lib's env step by
step on random actions before using it.
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from mbrl.bench.peers import ROOT, machine, run_peer, write_result

# mbrl-lib's PETS cart-pole example: the model, CEM, and its trainer call `train(num_epochs=50, patience=50)`
CFG = dict(ensemble_size=5, hidden=200, layers=3, population=500, iterations=5, elite_ratio=0.1, alpha=0.1, horizon=15, particles=20,
           trial_length=200, model_epochs=50, model_patience=50)


class CartPoleContinuous(gym.Env):
    """Continuous-force cart-pole, the dynamics of mbrl-lib's `cartpole_continuous` (euler, tau 0.02,
    force 10 * a, terminate at |x| > 2.4 or |theta| > 12 deg, reward 1 per step incl. the last)."""

    def __init__(self):
        self.gravity, self.masscart, self.masspole, self.length, self.force_mag, self.tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
        self.total_mass = self.masscart + self.masspole
        self.polemass_length = self.masspole * self.length
        self.theta_threshold = 12 * 2 * math.pi / 360
        self.x_threshold = 2.4
        high = np.array([self.x_threshold * 2, np.finfo(np.float32).max, self.theta_threshold * 2, np.finfo(np.float32).max], dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.observation_space = gym.spaces.Box(-high, high, dtype=np.float32)
        self.state = None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = self.np_random.uniform(low=-0.05, high=0.05, size=(4,))
        return np.array(self.state, dtype=np.float32), {}

    def step(self, action):
        x, x_dot, theta, theta_dot = self.state
        force = float(np.asarray(action).squeeze()) * self.force_mag
        c, s = math.cos(theta), math.sin(theta)
        temp = (force + self.polemass_length * theta_dot**2 * s) / self.total_mass
        thetaacc = (self.gravity * s - c * temp) / (self.length * (4.0 / 3.0 - self.masspole * c**2 / self.total_mass))
        xacc = temp - self.polemass_length * thetaacc * c / self.total_mass
        x, x_dot = x + self.tau * x_dot, x_dot + self.tau * xacc
        theta, theta_dot = theta + self.tau * theta_dot, theta_dot + self.tau * thetaacc
        self.state = (x, x_dot, theta, theta_dot)
        terminated = bool(x < -self.x_threshold or x > self.x_threshold or theta < -self.theta_threshold or theta > self.theta_threshold)
        return np.array(self.state, dtype=np.float32), 1.0, terminated, False, {}


def make_cartpole_vec(seed: int = 0, trial_length: int = 200):
    def thunk():
        return gym.wrappers.TimeLimit(CartPoleContinuous(), trial_length)

    env = gym.vector.SyncVectorEnv([thunk], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    env.reset(seed=seed)
    return env


PEER_CHECK = r"""
import json, sys, numpy as np
import mbrl.env.cartpole_continuous as cp
env = cp.CartPoleEnv()
obs, _ = env.reset(seed=int(sys.argv[1]))
acts = np.random.default_rng(1).uniform(-1, 1, size=(60, 1)).astype(np.float32)
out = [obs.tolist()]
for a in acts:
    obs, r, term, trunc, _ = env.step(a)
    out.append(obs.tolist() + [float(r), bool(term)])
    if term: break
print(json.dumps({"traj": out, "actions": acts.tolist()}))
"""

PEER_PETS = r"""
import json, sys, time, numpy as np, torch, omegaconf
torch.set_num_threads(int(sys.argv[4]))
import mbrl.env.cartpole_continuous as cartpole_env
import mbrl.env.reward_fns as reward_fns
import mbrl.env.termination_fns as termination_fns
import mbrl.models as models
import mbrl.planning as planning
import mbrl.util.common as common_util
seed, trials, n_timed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
np.random.seed(seed); torch.manual_seed(seed)
env = cartpole_env.CartPoleEnv()
env.reset(seed=seed)
env.action_space.seed(seed)
rng = np.random.default_rng(seed=seed)
generator = torch.Generator(); generator.manual_seed(seed)
obs_shape, act_shape = env.observation_space.shape, env.action_space.shape
trial_length, ensemble_size = 200, 5
cfg = omegaconf.OmegaConf.create({
    "dynamics_model": {"_target_": "mbrl.models.GaussianMLP", "device": "cpu", "num_layers": 3, "ensemble_size": ensemble_size,
        "hid_size": 200, "in_size": "???", "out_size": "???", "deterministic": False, "propagation_method": "fixed_model",
        "activation_fn_cfg": {"_target_": "torch.nn.SiLU"}, "_recursive_": False},
    "algorithm": {"learned_rewards": False, "target_is_delta": True, "normalize": True},
    "overrides": {"trial_length": trial_length, "num_steps": max(trials, 1) * trial_length, "model_batch_size": 32, "validation_ratio": 0.05}})
dynamics_model = common_util.create_one_dim_tr_model(cfg, obs_shape, act_shape)
model_env = models.ModelEnv(env, dynamics_model, termination_fns.cartpole, reward_fns.cartpole, generator=generator)
replay_buffer = common_util.create_replay_buffer(cfg, obs_shape, act_shape, rng=rng)
common_util.rollout_agent_trajectories(env, trial_length, planning.RandomAgent(env), {}, replay_buffer=replay_buffer, trial_length=trial_length)
agent_cfg = omegaconf.OmegaConf.create({"_target_": "mbrl.planning.TrajectoryOptimizerAgent", "planning_horizon": 15, "replan_freq": 1,
    "verbose": False, "action_lb": "???", "action_ub": "???", "_recursive_": False,
    "optimizer_cfg": {"_target_": "mbrl.planning.CEMOptimizer", "num_iterations": 5, "elite_ratio": 0.1, "population_size": 500,
        "alpha": 0.1, "device": "cpu", "lower_bound": "???", "upper_bound": "???", "return_mean_elites": True, "clipped_normal": False}})
agent = planning.create_trajectory_optim_agent_for_model(model_env, agent_cfg, num_particles=20)
trainer = models.ModelTrainer(dynamics_model, optim_lr=1e-3, weight_decay=5e-5)
def fit():
    dynamics_model.update_normalizer(replay_buffer.get_all())
    tr, va = common_util.get_basic_buffer_iterators(replay_buffer, batch_size=32, val_ratio=0.05, ensemble_size=ensemble_size, shuffle_each_epoch=True, bootstrap_permutes=False)
    trainer.train(tr, dataset_val=va, num_epochs=50, patience=50, silent=True)
times, returns = [], []
if n_timed:
    fit()
    obs, _ = env.reset(); agent.reset()
    agent.act(obs)
    for _ in range(n_timed):
        t = time.perf_counter(); agent.act(obs); times.append(time.perf_counter() - t)
for trial in range(trials):
    obs, _ = env.reset(); agent.reset()
    fit()
    total, steps, done = 0.0, 0, False
    while not done and steps < trial_length:
        next_obs, reward, terminated, truncated, _ = common_util.step_env_and_add_to_buffer(env, obs, agent, {}, replay_buffer)
        obs = next_obs; total += reward; steps += 1; done = terminated or truncated
    returns.append(total)
    print(json.dumps({"trial": trial, "return": total}), file=sys.stderr, flush=True)
print(json.dumps({"ms_per_action": [1000 * t for t in times], "returns": returns}))
"""


def check_port(seed: int = 3) -> int:
    """Step our port and mbrl-lib's env with the same reset seed and actions; return steps compared."""
    ref = run_peer("mbrllib", PEER_CHECK, str(seed), timeout=600)
    env = CartPoleContinuous()
    obs, _ = env.reset(seed=seed)
    if not np.allclose(obs, ref["traj"][0], atol=1e-6):
        raise RuntimeError(f"cart-pole port: reset differs from mbrl-lib's ({obs} vs {ref['traj'][0]})")
    for t, (a, row) in enumerate(zip(ref["actions"], ref["traj"][1:])):
        obs, r, term, _, _ = env.step(np.array(a, dtype=np.float32))
        if not (np.allclose(obs, row[:4], atol=1e-5) and r == row[4] and term == row[5]):
            raise RuntimeError(f"cart-pole port differs from mbrl-lib's at step {t}: {obs.tolist()}, {r}, {term} vs {row}")
    return len(ref["traj"]) - 1


OURS, OURS_VALUE, PEER = "mbrl (ours)", "mbrl (ours, + terminal value)", "mbrl-lib 0.2.0"
VALUE_DISCOUNT = 0.99
TRUE_FNS_NOTE = "mbrl-lib uses the true reward and termination functions (its example's setting); ours learns both."


def build_ours(seed: int, planning_dtype: str = "bfloat16", run_dir=None, terminal_value: bool = False, **overrides):
    from mbrl.algos.base import LoopConfig
    from mbrl.algos.model_fit import ModelFitter
    from mbrl.algos.pets import PETS
    from mbrl.data import ReplayBuffer
    from mbrl.models.ensemble import EnsembleModel

    c = {**CFG, **overrides}
    env, eval_env = make_cartpole_vec(seed, c["trial_length"]), make_cartpole_vec(seed + 1, c["trial_length"])
    # from_config draws the initial weights from `seed` (a direct constructor call would not)
    model = EnsembleModel.from_config(dict(ensemble_size=c["ensemble_size"], num_elites=c["ensemble_size"], hidden=c["hidden"], layers=c["layers"],
                                           propagation="ts_inf", planning_dtype=planning_dtype), env.single_observation_space, env.single_action_space, seed)
    # mbrl-lib's trainer: Adam lr 1e-3, batch 32, 5% hold-out, `train(num_epochs=50, patience=50)`
    fitter = ModelFitter(model, seed=seed, epochs=c["model_epochs"], patience=c["model_patience"], batch_size=32, holdout_ratio=0.05, opt={"lr": 1e-3})
    buffer = ReplayBuffer.for_env(env, 100_000, seed=seed)
    loop = LoopConfig(steps=0, prefill=c["trial_length"], train_ratio=1.0, eval_every=0, eval_episodes=1, log_every=10**9,
                      checkpoint_every=0, save_buffer=False, seed=seed, progress=False, tensorboard=False)
    algo = PETS(env, eval_env, buffer, model, fitter, loop,
                planner=dict(name="cem", population=c["population"], iterations=c["iterations"], elite_ratio=c["elite_ratio"], alpha=c["alpha"], return_mean_elites=True),
                horizon=c["horizon"], particles=c["particles"], fit_on_episode_end=True, fit_every=10**9, run_dir=run_dir,
                terminal_value=terminal_value, discount=VALUE_DISCOUNT if terminal_value else 1.0)
    return algo


def ours_speed(seed: int, n_timed: int, planning_dtype: str) -> list[float]:
    algo = build_ours(seed, planning_dtype)
    env = algo.env
    obs, _ = env.reset(seed=seed)
    for _ in range(CFG["trial_length"]):  # one random trial, then one fit (as the peer)
        a = env.action_space.sample()
        nobs, r, te, tr, info = env.step(a)
        done = te | tr
        real = nobs.copy()
        if done.any():
            real[0] = info["final_obs"][0]
        algo.buffer.add(obs, a, r, real, te, tr)
        obs = nobs
    algo.fit_model()
    first = np.ones(1, bool)
    _, state = algo.act(obs, first, None, True)
    times = []
    for _ in range(n_timed):
        t = time.perf_counter()
        algo.act(obs, np.zeros(1, bool), state, True)
        times.append(time.perf_counter() - t)
    return [1000 * t for t in times]


def ours_returns(seed: int, trials: int, terminal_value: bool = False, **overrides) -> list[float]:
    """Returns of the first `trials` PETS episodes (after one random 200-step trial)."""
    import csv

    with tempfile.TemporaryDirectory() as d:
        algo = build_ours(seed, run_dir=d, terminal_value=terminal_value, **overrides)
        algo.loop.steps = CFG["trial_length"] * (trials + 1)  # trial 0 is the random prefill trial
        algo.run()
        rows = list(csv.reader(open(Path(d) / "metrics.csv")))
    rets = [(int(r[0]), float(r[2])) for r in rows if r[1] == "train/return"]
    lens = [int(float(r[2])) for r in rows if r[1] == "train/length"]
    prefill = CFG["trial_length"]
    # trials = episodes that started after the random prefill trial
    return [ret for (end, ret), n in zip(rets, lens) if end - n >= prefill][:trials]


def add_arguments(parser) -> None:
    parser.add_argument("--trials", type=int, default=10, help="PETS trials (200 steps) for ours")
    parser.add_argument("--peer-trials", type=int, default=10, help="PETS trials for mbrl-lib")
    parser.add_argument("--timed", type=int, default=10, help="planned actions timed per library")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both (0: all cores)")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--ours", choices=("plain", "value", "both"), default="plain",
                        help=f"our PETS for the returns: as configured (plain), with a TD(λ) terminal value (γ {VALUE_DISCOUNT}), or both")
    parser.add_argument("--returns-only", action="store_true", help="skip the speed part (writes bench_pets_returns.md)")
    parser.add_argument("--combine", nargs="+", metavar="JSON", help="no runs: write one returns table from the .json files "
                        "of earlier --returns-only runs (e.g. ours and mbrl-lib run in parallel, one core each)")
    parser.add_argument("--out", default="bench_pets.md")


def run(args) -> int:
    import os

    from mbrl.bench.common import claim

    if (args.returns_only or args.combine) and args.out == "bench_pets.md":
        args.out = "bench_pets_returns.md"
    out = Path(args.out)
    claim(out, out.with_suffix(".json"), out.with_suffix(".png"))  # refused before the measurement, not after it
    if args.combine:
        return combine(args)
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    n_checked = check_port()
    print(f"cart-pole port matches mbrl-lib's env on {n_checked} random-action steps", flush=True)
    if args.returns_only:
        ours_bf16 = ours_fp32 = []
        peer = {"ms_per_action": []}
    else:
        ours_bf16 = ours_speed(args.seed, args.timed, "bfloat16")
        ours_fp32 = ours_speed(args.seed, args.timed, "float32")
        peer = run_peer("mbrllib", PEER_PETS, str(args.seed), "0", str(args.timed), str(threads), timeout=24 * 3600)
        med = lambda xs: float(np.median(xs))
        print(f"ms/action: ours bf16 {med(ours_bf16):.0f}, ours fp32 {med(ours_fp32):.0f}, mbrl-lib {med(peer['ms_per_action']):.0f}", flush=True)
    rows: dict[str, list[float]] = {}
    if not args.speed_only:
        if args.trials and args.ours in ("plain", "both"):
            rows[OURS] = ours_returns(args.seed, args.trials)
            print("ours returns", rows[OURS], flush=True)
        if args.trials and args.ours in ("value", "both"):
            rows[OURS_VALUE] = ours_returns(args.seed, args.trials, terminal_value=True)
            print("ours + terminal value returns", rows[OURS_VALUE], flush=True)
        if args.peer_trials:
            rows[PEER] = run_peer("mbrllib", PEER_PETS, str(args.seed), str(args.peer_trials), "0", str(threads), timeout=24 * 3600)["returns"]
            print("mbrl-lib returns", rows[PEER], flush=True)
    body = _report(args, threads, n_checked, ours_bf16, ours_fp32, peer["ms_per_action"], rows)
    flags = ("speed_only", "returns_only")
    cmd = "python -m mbrl.bench pets " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in (*flags, "out") and v is not None)
    cmd += "".join(f" --{f.replace('_', '-')}" for f in flags if getattr(args, f))
    p = write_result(args.out, "PETS: mbrl vs mbrl-lib 0.2.0 (cart-pole, CPU)", cmd, body)
    (p.with_suffix(".json")).write_text(json.dumps({"ours_bf16_ms": ours_bf16, "ours_fp32_ms": ours_fp32, "mbrllib_ms": peer["ms_per_action"], "returns": rows}, indent=1))
    if rows:
        _plot(rows, p.with_suffix(".png"))
    print(p.read_text())
    return 0


def combine(args) -> int:
    """One returns table from earlier `--returns-only` runs' JSON files (their commands and dates are quoted)."""
    rows: dict[str, list[float]] = {}
    sources = []
    for f in args.combine:
        path = Path(f)
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise SystemExit(f"error: --combine {f}: {e}; expected a .json written by `python -m mbrl.bench pets --returns-only`")
        found = dict(d.get("returns", {}))
        for key, label in (("ours_returns", OURS), ("mbrllib_returns", PEER)):  # files written before labelled rows
            if d.get(key):
                found[label] = d[key]
        for label, r in found.items():
            if r:
                rows.setdefault(label, r)
        md = path.with_suffix(".md")
        head = [ln for ln in md.read_text().splitlines() if ln.startswith(("- command", "- date", "- machine"))] if md.is_file() else []
        sources.append(f"`{path.name}`: " + "; ".join(h[2:] for h in head))
    if args.out == "bench_pets.md":
        args.out = "bench_pets_returns.md"
    body = "\n".join([f"Configuration: {json.dumps(CFG)}.", TRUE_FNS_NOTE, "", "Combined from separate runs (one core each; their dates below):", ""]
                     + [f"- {x}" for x in sources] + _returns_table(rows))
    p = write_result(args.out, "PETS: mbrl vs mbrl-lib 0.2.0 (cart-pole, CPU): return per trial", "python -m mbrl.bench pets --combine " + " ".join(args.combine), body)
    _plot(rows, p.with_suffix(".png"))
    print(p.read_text())
    return 0


def _report(args, threads, n_checked, ob, of, pm, rows: dict[str, list[float]]) -> str:
    med = lambda xs: float(np.median(xs))
    lines = [
        f"Configuration: {json.dumps(CFG)}; torch threads {threads}; seed {args.seed}.",
        f"Our cart-pole port was checked equal to mbrl-lib's `cartpole_continuous` on {n_checked} random-action steps (reset, obs, reward, termination).",
        TRUE_FNS_NOTE,
    ]
    if pm:
        lines += [
            "",
            "## Milliseconds per planned action (median of %d, after one fit on a random trial)" % args.timed,
            "",
            "| library | ms / action | vs mbrl-lib |",
            "|---|---:|---:|",
            f"| mbrl-lib 0.2.0 (fp32) | {med(pm):.0f} | 1.00 |",
            f"| mbrl (ours, fp32) | {med(of):.0f} | {med(of) / med(pm):.2f} |",
            f"| mbrl (ours, bf16 matmuls, default) | {med(ob):.0f} | {med(ob) / med(pm):.2f} |",
        ]
    if rows:
        lines += _returns_table(rows)
    return "\n".join(lines)


def _returns_table(rows: dict[str, list[float]]) -> list[str]:
    n = max(len(r) for r in rows.values())
    lines = ["", "## Return per trial (200 steps; trial 0 is random, not listed)", "", "| trial | " + " | ".join(str(i + 1) for i in range(n)) + " |",
             "|---|" + "---:|" * n]
    lines += [f"| {label} | " + " | ".join(f"{x:.0f}" for x in r) + " |" for label, r in rows.items()]
    if OURS_VALUE in rows:
        lines.append(f"\n`{OURS_VALUE}`: the same PETS plus `terminal_value=True, discount={VALUE_DISCOUNT}` (a value net fitted by TD(λ) on the real data, added at the horizon).")
    return lines


def _plot(rows: dict[str, list[float]], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for (label, r), style in zip(rows.items(), ("o-", "^-", "s--", "d:")):
        ax.plot(range(1, len(r) + 1), r, style, label=label)
    ax.axhline(180, color="gray", lw=0.8, ls=":")
    ax.set_xlabel("trial (200 steps)")
    ax.set_ylabel("return")
    ax.set_title("PETS on continuous cart-pole")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
