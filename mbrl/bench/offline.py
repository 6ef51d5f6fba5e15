"""Offline RL side by side with d3rlpy 2.8.1: IQL, CQL and TD3+BC on the same HDF5 files, budgets and evaluation.

`python -m mbrl.bench offline --datasets data/d4rl/hopper-medium-replay-v5.hdf5,... [--algos iql,cql,td3bc]
 [--steps 100000] [--seeds 0,1,2] [--eval-episodes 10] [--libraries mbrl,d3rlpy] [--work runs/bench_offline]`

Each job (library x dataset x algo x seed) trains `--steps` gradient steps at batch 256 and is then
evaluated by the same code: our `OfflineAlgorithm.evaluate` (the same eval env, episode seeds and
deterministic actions) runs our policy, or d3rlpy's greedy policy exported as TorchScript
(`save_policy`, its observation scaler inside). Normalised scores use the dataset's reference returns
(D4RL's for hopper / halfcheetah / walker2d stems), as `python -m mbrl.train env=d4rl/...` logs them.

Settings: d3rlpy is configured from *our* composed config of the same algo (`configs/algo/<algo>.yaml`,
`configs/learner/<algo>.yaml`): the same widths and depths, learning rates, gamma, tau, batch size and
the method's own coefficients (IQL expectile / beta / max weight; CQL weight, sampled actions, fixed
conservative weight, learned SAC temperature from 1.0, deterministic backup; TD3+BC alpha, target
smoothing, actor delay), observations standardised with the dataset statistics in both. So the scores
compare implementations, not settings.

Speed: gradient steps per second of the training loop alone (ours: `time/updates_per_s` of the run,
which covers sampling, the update and logging; d3rlpy: its `fit` call, which covers the same), both at
`--threads` torch threads (1 by default: the safe setting on a shared 2-core machine).

d3rlpy runs in its own venv (`.bench_venvs/d3rlpy`, made on first use from PyPI: d3rlpy 2.8.1 pins
gymnasium 1.0.0) in a subprocess; nothing of it is imported here. Finished jobs are kept as JSON
files in `--work` and reused by a later call with the same settings (a long sweep can be resumed);
the results file is written from every job there that matches the call.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mbrl.bench.common import claim
from mbrl.bench.peers import ROOT, run_peer, write_result
from mbrl.errors import UserError

ALGOS = ("iql", "cql", "td3bc")
LIBRARIES = ("mbrl", "d3rlpy")


def add_arguments(p) -> None:
    p.add_argument("--datasets", required=True, help="comma-separated D4RL-format HDF5 files (the file stem names the dataset, e.g. hopper-medium-replay-v5)")
    p.add_argument("--algos", default=",".join(ALGOS), help=f"comma-separated, from {', '.join(ALGOS)}")
    p.add_argument("--libraries", default=",".join(LIBRARIES), help=f"comma-separated, from {', '.join(LIBRARIES)}")
    p.add_argument("--steps", type=int, default=100_000, help="gradient steps per job (batch 256)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="torch threads in both libraries")
    p.add_argument("--work", default=str(ROOT / "runs" / "bench_offline"), help="folder of finished jobs (JSON), reused by later calls")
    p.add_argument("--out", default="bench_offline.md", help="results file (under results/ unless absolute)")


def _list(value: str, valid: tuple[str, ...] | None, what: str) -> list[str]:
    items = [x.strip() for x in str(value).split(",") if x.strip()]
    if not items:
        raise UserError(f"--{what} is empty; give a comma-separated list" + (f" from {', '.join(valid)}" if valid else ""))
    if valid is not None:
        bad = [x for x in items if x not in valid]
        if bad:
            raise UserError(f"--{what}: unknown {', '.join(bad)}; valid: {', '.join(valid)}")
    return items


def parse(args) -> dict:
    datasets = [Path(p) for p in _list(args.datasets, None, "datasets")]
    missing = [str(p) for p in datasets if not p.is_file()]
    if missing:
        raise UserError(f"--datasets: no such file {', '.join(missing)}; expected D4RL-format HDF5 files (write them with python -m mbrl.collect)")
    try:
        seeds = [int(s) for s in _list(args.seeds, None, "seeds")]
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    for k in ("steps", "eval_episodes", "threads"):
        if getattr(args, k) < 1:
            raise UserError(f"--{k.replace('_', '-')} must be >= 1, got {getattr(args, k)}")
    return dict(datasets=datasets, algos=_list(args.algos, ALGOS, "algos"), libraries=_list(args.libraries, LIBRARIES, "libraries"),
                seeds=seeds, steps=int(args.steps), episodes=int(args.eval_episodes), threads=int(args.threads))


# ------------------------------------------------------------------------------------------- ours

def compose_job(path: Path, algo: str, seed: int, steps: int, episodes: int, threads: int, run_dir: Path):
    from mbrl.config import compose

    return compose([f"env=d4rl/{path.stem}", f"dataset_path={path}", f"algo={algo}", f"steps={steps}", "eval_every=0",
                    f"eval_episodes={episodes}", f"log_every={steps}", "checkpoint_every=0", "progress=false", "tensorboard=false",
                    f"seed={seed}", f"threads={threads}", f"run_dir={run_dir}"])


def build_job(cfg, run_dir: Path):
    from mbrl.train import build

    torch.set_num_threads(int(cfg.threads))
    return build(cfg, run_dir)


def run_ours(cfg, run_dir: Path) -> dict:
    from mbrl.plot import read_curve

    algo = build_job(cfg, run_dir)
    t0 = time.time()
    m = algo.run()
    wall = time.time() - t0
    _, rate = read_curve(run_dir, "time/updates_per_s")
    return dict(score=m.get("eval/normalized_score"), ret=m["eval/return"], steps_per_s=float(rate[-1]), wall_s=round(wall, 1),
                gflop_per_step=update_flops(algo) / 1e9)


def update_flops(algo) -> float:
    """Matmul FLOPs (forward and backward, torch's FlopCounterMode) of one more gradient step of the trained learner; d3rlpy's
    step does the same network work (the same widths, batch, sampled actions and critics), so this is both libraries' floor."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = algo.buffer.sample(algo.batch_size)
    with FlopCounterMode(display=False) as fc:
        algo.learner.update(batch)
    return float(fc.get_total_flops())


# ------------------------------------------------------------------------------------------ d3rlpy

def d3rlpy_settings(cfg) -> dict:
    """d3rlpy's config keys for our composed config `cfg` of the same algo (see the module docstring)."""
    algo, lc = str(cfg.algo.name), cfg.learner
    units = [int(lc.hidden)] * int(lc.layers)
    common = dict(batch_size=int(cfg.algo.batch_size), gamma=float(lc.gamma), tau=float(lc.tau))
    if algo == "iql":
        return dict(kind="IQLConfig", units=units, encoders=("actor", "critic", "value"), actor_learning_rate=float(lc.lr),
                    critic_learning_rate=float(lc.lr), expectile=float(lc.expectile), weight_temp=float(lc.beta),
                    max_weight=float(lc.max_weight), n_critics=2, **common)
    if algo == "cql":
        if float(lc.temperature) != 1.0:
            raise UserError(f"d3rlpy's CQL has no logsumexp temperature (ours: learner.temperature={lc.temperature}); compare at 1.0")
        lr = float(lc.lr)
        return dict(kind="CQLConfig", units=units, encoders=("actor", "critic"), actor_learning_rate=float(lc.actor_lr or lr),
                    critic_learning_rate=lr, temp_learning_rate=float(lc.get("alpha_lr") or lr), initial_temperature=float(lc.get("init_alpha") or 1.0),
                    alpha_learning_rate=0.0, initial_alpha=1.0, conservative_weight=float(lc.cql_weight), n_action_samples=int(lc.num_samples),
                    n_critics=int(lc.num_q), soft_q_backup=bool(lc.backup_entropy), **common)
    if algo == "td3bc":
        return dict(kind="TD3PlusBCConfig", units=units, encoders=("actor", "critic"), actor_learning_rate=float(lc.lr),
                    critic_learning_rate=float(lc.lr), alpha=float(lc.alpha), target_smoothing_sigma=float(lc.policy_noise),
                    target_smoothing_clip=float(lc.noise_clip), update_actor_interval=int(lc.actor_every), n_critics=2, **common)
    raise UserError(f"bench offline compares {', '.join(ALGOS)}; got algo={algo}")


# runs in the d3rlpy venv: argv[1] = JSON job; prints one JSON line
PEER_D3RLPY = r"""
import json, sys, time
import h5py, numpy as np, torch, d3rlpy
job = json.loads(sys.argv[1])
torch.set_num_threads(job["threads"])
d3rlpy.seed(job["seed"])
with h5py.File(job["path"], "r") as f:
    obs, act = f["observations"][()].astype(np.float32), f["actions"][()].astype(np.float32)
    rew, term, tout = f["rewards"][()].astype(np.float32), f["terminals"][()].astype(bool), f["timeouts"][()].astype(bool)
tout = tout & ~term
if not (term[-1] or tout[-1]):
    tout[-1] = True  # the file ends mid-episode
ds = d3rlpy.dataset.MDPDataset(obs, act, rew, term.astype(np.float32), tout.astype(np.float32))
s = dict(job["settings"])
kind, units, encoders = s.pop("kind"), s.pop("units"), s.pop("encoders")
enc = {f"{e}_encoder_factory": d3rlpy.models.encoders.VectorEncoderFactory(units) for e in encoders}
algo = getattr(d3rlpy.algos, kind)(observation_scaler=d3rlpy.preprocessing.StandardObservationScaler(), **enc, **s).create(device="cpu:0")
algo.build_with_dataset(ds)
t0 = time.perf_counter()
algo.fit(ds, n_steps=job["steps"], n_steps_per_epoch=job["steps"], logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
         show_progress=False, save_interval=10**9)
dt = time.perf_counter() - t0
algo.save_policy(job["policy"])
print(json.dumps({"steps_per_s": job["steps"] / dt, "fit_s": dt, "version": d3rlpy.__version__, "transitions": int(ds.transition_count)}))
"""


def run_d3rlpy(cfg, path: Path, run_dir: Path) -> dict:
    from mbrl.algos.offline import OfflineAlgorithm

    policy_file = run_dir / "d3rlpy_policy.pt"
    job = dict(path=str(path.resolve()), seed=int(cfg.seed), steps=int(cfg.steps), threads=int(cfg.threads), settings=d3rlpy_settings(cfg),
               policy=str(policy_file))
    t0 = time.time()
    out = run_peer("d3rlpy", PEER_D3RLPY, json.dumps(job), timeout=48 * 3600)
    wall = time.time() - t0
    ours = build_job(cfg, run_dir / "eval")  # the same eval env, dataset references and episode seeds as our job
    module = torch.jit.load(str(policy_file))

    class Exported(OfflineAlgorithm):
        def policy(self, obs, explore):
            return module(obs.float())

    ev = Exported(ours.eval_env, ours.dataset, ours.buffer, ours.loop)
    ev.meta = ours.meta
    m = ev.evaluate(int(cfg.eval_episodes))
    return dict(score=m.get("eval/normalized_score"), ret=m["eval/return"], steps_per_s=float(out["steps_per_s"]), wall_s=round(wall, 1),
                version=out["version"])


# ------------------------------------------------------------------------------------------- jobs

def job_key(lib: str, path: Path, algo: str, seed: int, steps: int, episodes: int) -> str:
    return f"{lib}__{path.stem}__{algo}__s{seed}__{steps}steps__{episodes}ep"


def run_job(lib: str, path: Path, algo: str, seed: int, o: dict, work: Path) -> dict:
    key = job_key(lib, path, algo, seed, o["steps"], o["episodes"])
    done = work / f"{key}.json"
    if done.is_file():
        rec = json.loads(done.read_text())
        if rec.get("dataset_bytes") == path.stat().st_size:
            print(f"{key}: reused {done}", flush=True)
            return rec
    with tempfile.TemporaryDirectory(prefix="bench_offline_") as tmp:
        run_dir = Path(tmp) / "run"
        cfg = compose_job(path, algo, seed, o["steps"], o["episodes"], o["threads"], run_dir)
        res = run_ours(cfg, run_dir) if lib == "mbrl" else run_d3rlpy(cfg, path, Path(tmp))
    rec = dict(library=lib, dataset=path.stem, algo=algo, seed=seed, steps=o["steps"], eval_episodes=o["episodes"], threads=o["threads"],
               dataset_bytes=path.stat().st_size, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **res)
    work.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(rec, indent=1))
    print(f"{key}: score {rec['score']}, return {rec['ret']:.1f}, {rec['steps_per_s']:.0f} steps/s ({rec['wall_s']:.0f} s)", flush=True)
    return rec


def run(args) -> int:
    o = parse(args)
    claim(args.out)
    work = Path(args.work)
    from mbrl.bench.dreamer import peak_matmul

    torch.set_num_threads(o["threads"])
    o["peak"] = [peak_matmul(torch.float32)]
    recs = [run_job(lib, path, algo, seed, o, work) for path in o["datasets"] for algo in o["algos"] for seed in o["seeds"] for lib in o["libraries"]]
    o["peak"].append(peak_matmul(torch.float32))
    cmd = (f"python -m mbrl.bench offline --datasets {args.datasets} --algos {args.algos} --libraries {args.libraries} --steps {o['steps']} "
           f"--seeds {args.seeds} --eval-episodes {o['episodes']} --threads {o['threads']}")
    p = write_result(args.out, "Offline RL: mbrl vs d3rlpy 2.8.1 (same HDF5 files, budgets and evaluation)", cmd, report(recs, o))
    p.with_suffix(".json").write_text(json.dumps(recs, indent=1))
    print(p.read_text())
    return 0


def _ms(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    return f"{np.mean(xs):.1f}" + (f" ± {np.std(xs):.1f}" if len(xs) > 1 else "")


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def report(recs: list[dict], o: dict) -> str:
    lines = [f"Budget: {o['steps']} gradient steps at batch 256 per job; {o['episodes']} evaluation episodes at the end (deterministic "
             f"actions, the same env seeds for both libraries); seeds {', '.join(map(str, o['seeds']))}; torch threads {o['threads']}. "
             "Scores: D4RL-normalised (100 = D4RL expert reference) mean ± std over seeds. Steps/s: gradient steps per second of the "
             "training loop (mean over seeds). Settings: d3rlpy configured from our config of each algo (mbrl/bench/offline.py). "
             f"Floor: GFLOP per gradient step (matmuls, forward and backward, counted on ours; d3rlpy's networks and batch are the same) "
             f"and the steps/s that the fp32 matmul peak measured in this process at {o['threads']} thread(s) allows "
             f"({' / '.join(f'{x:.0f}' for x in o['peak'])} GFLOP/s before / after the jobs; the higher is used).",
             "", "| dataset | algo | mbrl score | d3rlpy score | mbrl steps/s | d3rlpy steps/s | speed ratio | GFLOP/step | peak-bound steps/s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    keys = sorted({(r["dataset"], r["algo"]) for r in recs}, key=lambda k: (k[0], ALGOS.index(k[1])))
    for ds, algo in keys:
        by = {lib: [r for r in recs if r["dataset"] == ds and r["algo"] == algo and r["library"] == lib] for lib in LIBRARIES}
        rate = {lib: float(np.mean([r["steps_per_s"] for r in rs])) if rs else None for lib, rs in by.items()}
        ratio = f"{rate['mbrl'] / rate['d3rlpy']:.2f}x" if rate["mbrl"] and rate["d3rlpy"] else "-"
        gf = [r["gflop_per_step"] for r in by["mbrl"] if r.get("gflop_per_step")]
        floor = f"{np.mean(gf):.3f} | {max(o['peak']) / np.mean(gf):.0f}" if gf else "- | -"
        lines.append(f"| {ds} | {algo} | {_ms([r['score'] for r in by['mbrl']])} | {_ms([r['score'] for r in by['d3rlpy']])} | "
                     f"{_rate(rate['mbrl'])} | {_rate(rate['d3rlpy'])} | {ratio} | {floor} |")
    wall = sum(r["wall_s"] for r in recs)
    lines += ["", f"Wall-clock of all {len(recs)} jobs (training + evaluation, as run; reused jobs count their own run): {wall / 60:.1f} min."]
    return "\n".join(lines)
