"""Nothing gets slower: PETS planning and the Dreamer training step, this tree against a base commit.

`python -m mbrl.bench compare --base 0f795cb [--repeats 3] [--timed 30] [--size XS] [--steps 3]`

A git worktree of `--base` is made in a temp dir (removed at the end); the new side is a copy of this
working tree taken at the start (or a worktree of `--new REV`). Each measurement runs each
tree's OWN benchmark function in a fresh subprocess (`PYTHONPATH=<tree>`, `cwd=<tree>`, the tree's
glibc malloc setting as `python -m mbrl.bench` applies it, one torch thread):
- PETS: ms per planned action, `mbrl.bench.pets.ours_speed(seed, timed, dtype)` (mbrl-lib's
  cart-pole configuration, after one random trial and one fit), bf16 and fp32 planning;
- Dreamer: one full training step, `mbrl.bench.dreamer._ours(size, 16, 64, 15, 6, steps, warmup,
  precision)` (world model + actor + critic on a [16, 64] batch of 64x64x3 pixels), fp32 and bf16.
Old and new runs alternate (old, new, then new, old in the next repeat, ...) so that a drift in the
machine's load falls on both sides. Per side: the median over all timed actions (PETS) or of the
per-run medians (Dreamer); the ratio new / old; the goal is <= 1.05. Writes results/<--out>.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mbrl.bench.peers import ROOT, write_result

GOAL = 1.05
# the Dreamer bench's batch (mbrl/bench/dreamer.py run()): B, L, H, A
B, L, H, A = 16, 64, 15, 6

# Runs inside the tree under test (its own mbrl on PYTHONPATH): one measurement, one JSON line.
SCRIPT = r"""
import json, sys
from pathlib import Path
a = json.loads(sys.argv[1])
import time
if a["clock"] == "cpu":  # the benches time with perf_counter: make it this process's CPU time (robust to a loaded machine)
    time.perf_counter = time.process_time
import mbrl
tree = Path(a["tree"]).resolve()
assert tree in Path(mbrl.__file__).resolve().parents, f"mbrl imported from {mbrl.__file__}, not from {tree}"
from mbrl.utils.memory import keep_freed_memory
keep = keep_freed_memory()  # as `python -m mbrl.bench` runs
import torch
torch.set_num_threads(a["threads"])
if a["kind"] == "pets":
    from mbrl.bench.pets import ours_speed
    out = {"ms": ours_speed(a["seed"], a["timed"], a["dtype"])}
else:
    from mbrl.bench.dreamer import _ours
    r = _ours(a["size"], a["B"], a["L"], a["H"], a["A"], a["steps"], a["warmup"], a["precision"])
    out = {k: r[k] for k in ("step_s", "min_s", "params", "flops")}
out["keep_freed_memory"] = bool(keep)
out["threads"] = torch.get_num_threads()
print("RESULT " + json.dumps(out), flush=True)
"""


def add_arguments(parser) -> None:
    parser.add_argument("--base", default="0f795cb", help="the base commit (old side)")
    parser.add_argument("--new", default=None, help="the new side: a commit (checked out in a worktree too); default: a copy of this working tree taken at the start")
    parser.add_argument("--repeats", type=int, default=3, help="old/new pairs per measurement")
    parser.add_argument("--timed", type=int, default=30, help="PETS: planned actions timed per run")
    parser.add_argument("--size", default="XS", help="Dreamer: DreamerV3 size (XS or S)")
    parser.add_argument("--steps", type=int, default=3, help="Dreamer: timed training steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="Dreamer: warm-up steps per run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=("pets", "dreamer"), default=None, help="measure one part only")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="what the benches' perf_counter reads in the runs: the process's CPU time (default; robust when other jobs "
                             "share the machine, as under `nice`) or wall-clock time (an idle machine)")
    parser.add_argument("--out", default="bench_protocol.md")


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _snapshot(dest: Path) -> Path:
    """A copy of this working tree as it is now: tracked files and untracked ones that git does not ignore."""
    files = [f for f in _git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0") if f]
    for f in files:
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    return dest


def _measure(tree: Path, args: dict, timeout: float = 3600) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(args["threads"]), MKL_NUM_THREADS=str(args["threads"]))
    env.pop("PYTHONSTARTUP", None)
    p = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps({**args, "tree": str(tree)})], cwd=tree, env=env,
                       capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"measurement in {tree} failed (rc {p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _configs(a) -> list[tuple[str, str, dict]]:
    """(part, label, subprocess arguments) of every measurement."""
    common = dict(threads=a.threads, seed=a.seed, clock=a.clock)
    out = []
    if a.only in (None, "pets"):
        for dtype in ("bfloat16", "float32"):
            out.append(("pets", f"PETS ms / planned action, {'bf16' if dtype == 'bfloat16' else 'fp32'} planning",
                        dict(common, kind="pets", timed=a.timed, dtype=dtype)))
    if a.only in (None, "dreamer"):
        for precision in ("fp32", "bf16"):
            out.append(("dreamer", f"Dreamer s / training step, size {a.size}, {precision}",
                        dict(common, kind="dreamer", size=a.size, B=B, L=L, H=H, A=A, steps=a.steps, warmup=a.warmup, precision=precision)))
    return out


def _summary(part: str, runs: list[dict]) -> tuple[float, list[float]]:
    """(median of the side, per-run medians)."""
    if part == "pets":
        per_run = [float(np.median(r["ms"])) for r in runs]
        return float(np.median([x for r in runs for x in r["ms"]])), per_run
    per_run = [float(r["step_s"]) for r in runs]
    return float(np.median(per_run)), per_run


def run(args) -> int:
    import torch

    from mbrl.bench.common import claim

    out_md, out_json = claim(args.out, Path(args.out).with_suffix(".json"))  # refused before the measurement
    torch.set_num_threads(args.threads)  # what the results header reports (the runs set their own)
    base_sha = _git("rev-parse", args.base)
    tmp = Path(tempfile.mkdtemp(prefix="mbrl_compare_"))
    trees: dict[str, Path] = {}
    made: list[Path] = []
    try:
        old = tmp / "old"
        _git("worktree", "add", "--detach", str(old), base_sha)
        made.append(old)
        trees["old"] = old
        if args.new:
            new_sha = _git("rev-parse", args.new)
            new = tmp / "new"
            _git("worktree", "add", "--detach", str(new), new_sha)
            made.append(new)
            trees["new"] = new
            new_desc = f"`{new_sha[:10]}` ({_git('log', '-1', '--format=%s', new_sha)[:80]})"
        else:
            new_sha = _git("rev-parse", "HEAD")
            dirty = [ln for ln in _git("status", "--porcelain", "--untracked-files=no").splitlines() if ln.strip()]
            trees["new"] = _snapshot(tmp / "new")  # others may edit the working tree while this runs
            new_desc = f"this working tree, copied at the start: HEAD `{new_sha[:10]}` ({_git('log', '-1', '--format=%s', 'HEAD')[:80]}…)" + (
                f" + uncommitted changes in {len(dirty)} tracked files" if dirty else "") + " + untracked files that git does not ignore"
        base_desc = f"`{base_sha[:10]}` ({_git('log', '-1', '--format=%s', base_sha)[:80]}…)"
        configs = _configs(args)
        results: dict[str, dict[str, list[dict]]] = {label: {"old": [], "new": []} for _, label, _ in configs}
        order_log = []
        t_start = time.time()
        for rep in range(args.repeats):
            sides = ("old", "new") if rep % 2 == 0 else ("new", "old")  # alternate; flip each repeat so a linear drift cancels
            for part, label, cfg in configs:
                for side in sides:
                    t0 = time.time()
                    r = _measure(trees[side], cfg)
                    results[label][side].append(r)
                    order_log.append(side)
                    s = f"{float(np.median(r['ms'])):.0f} ms/action" if part == "pets" else f"{r['step_s']:.2f} s/step"
                    print(f"[{time.time() - t_start:6.0f}s] repeat {rep + 1}/{args.repeats} {label} {side}: {s} (run {time.time() - t0:.0f}s)", flush=True)
        wall = time.time() - t_start
        load = os.getloadavg()
    finally:
        for w in made:
            subprocess.run(["git", "worktree", "remove", "--force", str(w)], cwd=ROOT, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True)

    rows = ["| measurement | old (base) | new | new / old | per-pair new / old | runs per side |", "|---|---:|---:|---:|---|---:|"]
    verdict = []
    for part, label, _ in configs:
        mo, po = _summary(part, results[label]["old"])
        mn, pn = _summary(part, results[label]["new"])
        ratio = mn / mo
        pairs = ", ".join(f"{n / o:.3f}" for o, n in zip(po, pn))
        fmt = (lambda x: f"{x:.0f} ms") if part == "pets" else (lambda x: f"{x:.3f} s")
        rows.append(f"| {label} | {fmt(mo)} | {fmt(mn)} | **{ratio:.3f}** | {pairs} | {len(po)} |")
        verdict.append((label, ratio))
    extra = []
    if any(p == "dreamer" for p, _, _ in configs):
        extra += ["", "| Dreamer | old GFLOP/step | new GFLOP/step | old params | new params |", "|---|---:|---:|---:|---:|"]
        for part, label, _ in configs:
            if part == "dreamer":
                o, n = results[label]["old"][0], results[label]["new"][0]
                extra.append(f"| {label} | {o['flops'] / 1e9:.1f} | {n['flops'] / 1e9:.1f} | {o['params'] / 1e6:.2f}M | {n['params'] / 1e6:.2f}M |")
    worst = max(r for _, r in verdict)
    keep = {r.get("keep_freed_memory") for side in results.values() for rs in side.values() for r in rs}
    clock = ("times are the process's CPU time (`time.perf_counter`, which the benches time with, reads `time.process_time` in the runs: "
             "robust to other jobs sharing the machine, as under `nice`; it does not count waiting for a core)" if args.clock == "cpu" else
             "times are wall-clock (`time.perf_counter`)")
    method = (
        f"Each row: each tree's own function in a fresh subprocess (`PYTHONPATH=<tree>`, `cwd=<tree>`), {args.threads} torch thread(s); {clock}; "
        f"glibc keep-freed-memory setting {'on' if keep == {True} else 'off' if keep == {False} else 'mixed'} (as `python -m mbrl.bench` applies it); "
        f"{args.repeats} old/new pairs per row, run in the order old, new / new, old / ... (flipped every repeat so that a linear drift in "
        f"the machine's load cancels). PETS: `mbrl.bench.pets.ours_speed(seed={args.seed}, n_timed={args.timed}, dtype)` — mbrl-lib's "
        f"PETS cart-pole configuration (ensemble 5 x 3 x 200, CEM population 500 x 5 iterations, horizon 15, 20 particles TS∞), "
        f"after one random trial and one model fit; the side's value is the median over all {args.timed} x {args.repeats} timed actions. "
        f"Dreamer: `mbrl.bench.dreamer._ours(size={args.size!r}, B={B}, L={L}, H={H}, A={A}, steps={args.steps}, warmup={args.warmup}, precision)` "
        f"— one full training step (world model, actor, critic) on random 64x64x3 pixel sequences; its value is the median of the "
        f"runs' medians of {args.steps} timed steps. The per-pair column divides the two runs of each pair (drift within a pair only)."
    )
    body = "\n".join([
        f"- old (base): {base_desc}",
        f"- new: {new_desc}",
        f"- wall clock of the measurements: {wall / 60:.1f} min; load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min)",
        "",
        *rows,
        *extra,
        "",
        f"Goal: new / old <= {GOAL:.2f} everywhere. Worst ratio: **{worst:.3f}** — " + ("met." if worst <= GOAL else "NOT met."),
        "",
        method,
    ])
    cmd = f"nice python -m mbrl.bench compare --base {args.base}" + (f" --new {args.new}" if args.new else "") + (
        f" --repeats {args.repeats} --timed {args.timed} --size {args.size} --steps {args.steps} --warmup {args.warmup} --threads {args.threads} --clock {args.clock}"
        + (f" --only {args.only}" if args.only else ""))
    p = write_result(out_md, "Protocol refactor: nothing gets slower (PETS planning, Dreamer training step; CPU)", cmd, body)
    out_json.write_text(json.dumps({"base": base_sha, "new": new_sha, "new_is_working_tree": not args.new, "order": order_log,
                                                    "results": results}, indent=1))
    print(p.read_text())
    return 0
