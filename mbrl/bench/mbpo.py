"""MBPO learning curve: run (or read) an MBPO training run and write its eval curve to results/.

`python -m mbrl.bench mbpo --env gym/Hopper-v5 --minutes 15 [--run-dir DIR] [-- extra overrides]`
runs `python -m mbrl.train env=... model=ensemble algo=mbpo <overrides>` for at most `--minutes`
of wall clock (the run is stopped there; its metrics.csv holds every evaluation so far), then
writes results/mbpo_<task>_<device>.md and .png.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

from mbrl.bench.peers import ROOT, write_result

CPU_OVERRIDES = [
    "steps=100000", "algo.prefill=2000", "algo.train_ratio=5", "algo.fit.max_updates=400", "algo.rollout_batch=10000",
    "algo.rollout_schedule=[0,1,1,1]", "eval_every=1000", "eval_episodes=3", "checkpoint_every=0", "save_buffer=false",
    "model.ensemble_size=7", "model.num_elites=5", "progress=false",
]


def add_arguments(parser) -> None:
    parser.add_argument("--env", default="gym/Hopper-v5")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--run-dir", default=None, help="read an existing run instead of training")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("overrides", nargs="*", help="extra `key=value` overrides for mbrl.train")


def run(args) -> int:
    from mbrl.bench.common import claim

    overrides = CPU_OVERRIDES + list(args.overrides)
    task = args.env.replace("/", "_").replace("-", "_").lower()
    name = f"mbpo_{task}_{args.device}"
    md_path, png_path = claim(f"{name}.md", f"{name}.png")  # refuse existing results before the run
    if args.run_dir is None:
        run_dir = ROOT / "runs" / "mbpo_bench" / time.strftime("%Y-%m-%d_%H-%M-%S")
        cmd = [sys.executable, "-m", "mbrl.train", f"env={args.env}", "model=ensemble", "algo=mbpo", f"device={args.device}", f"run_dir={run_dir}", *overrides]
        print(" ".join(cmd), flush=True)
        t0 = time.time()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ))
        try:
            proc.wait(timeout=args.minutes * 60)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait()
        wall = time.time() - t0
    else:
        run_dir, wall = Path(args.run_dir), None
    rows = list(csv.reader(open(Path(run_dir) / "metrics.csv")))
    evals = [(int(r[0]), float(r[2])) for r in rows if r[1] == "eval/return"]
    body = [f"MBPO on `{args.env}`, {args.device.upper()} run" + (f", stopped after {wall / 60:.1f} min of wall clock" if wall else "") + ".",
            f"Overrides: `{' '.join(overrides)}`.", "", "| env steps | eval return |", "|---:|---:|"]
    body += [f"| {s} | {v:.1f} |" for s, v in evals]
    cmd = f"python -m mbrl.bench mbpo --env {args.env} --minutes {args.minutes} --device {args.device}" + "".join(f" {o}" for o in args.overrides)
    p = write_result(md_path, f"MBPO learning curve: {args.env} ({args.device.upper()})", cmd, "\n".join(body))
    if evals:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot([s for s, _ in evals], [v for _, v in evals], "o-")
        ax.set_xlabel("env steps")
        ax.set_ylabel("eval return")
        ax.set_title(f"MBPO {args.env} ({args.device.upper()} run)")
        fig.tight_layout()
        fig.savefig(png_path, dpi=120)
    print(p.read_text())
    return 0
