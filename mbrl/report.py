"""From a sweep to the tables and figures a paper needs, beside the published baselines:

    python -m mbrl.report <run dirs or sweep dirs>... --out report/ [--reps 2000] [--seed 0]

Reads every run directory (config.yaml + metrics.csv) under the given paths and writes to `--out`:
- `report.md`: per-task final score, mean and 95% bootstrap CI over seeds, with the published methods'
  rows for the same task; normalised scores; aggregates (mean, median, IQM, optimality gap) with
  stratified bootstrap CIs for the user's methods and the baselines over the same tasks; failed runs
  with their error line;
- `runs.csv`, `tasks.csv`, `aggregates.csv`: the same numbers;
- `curves_<task>.png` (mean and 95% CI of eval/return over seeds), `aggregates.png` (interval
  estimates, one row per method, the published ones included) and `profiles.png` (performance
  profiles).

Scoring: Atari100k as DreamerV3 does (the mean of the training episode returns logged in the last 10k
of the 400k frames, `envs/scores.py window_score`), human-normalised; D4RL datasets D4RL-normalised
(0-100, aggregated as /100; the published D4RL tables of OfflineRL-Kit and CORL, `mbrl/baselines/d4rl.csv`,
are mean ± std of normalised scores and sit beside the runs of the same dataset, any version); DMC raw (aggregated as /1000, as rliable's DMC examples); other tasks
(toy, gym) raw, aggregated on the raw scale. Everything else: the run's last evaluation return.

The statistics follow Agarwal et al. 2021 ("Deep RL at the edge of the statistical precipice") and
its `rliable` package: scores are a (runs x tasks) matrix; mean and median are over the per-task means,
IQM is the 25%-trimmed mean of all scores, the optimality gap is `gamma - mean(min(score, gamma))`
with gamma 1; the stratified bootstrap resamples the runs of each task with replacement and takes
the percentile interval. tests/test_report.py checks these against rliable where it is installed.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from mbrl.errors import UserError
from mbrl.sweep import NOT_RUNS

BASELINES_DIR = Path(__file__).resolve().parent / "baselines"
# the aggregate scale of a normalised score: hns and raw are used as they are, d4rl / 100, dmc / 1000
AGG_DIVISOR = {"hns": 1.0, "d4rl": 100.0, "dmc": 1000.0, "raw": 1.0}


# ----- statistics ---------------------------------------------------------------------------------
def iqm(scores: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% of all scores (scipy's trim_mean at 0.25)."""
    x = np.sort(np.asarray(scores, dtype=float).ravel())
    cut = int(0.25 * x.size)
    return float(x[cut:x.size - cut].mean())


def mean_score(scores: np.ndarray) -> float:
    return float(np.mean(np.mean(np.asarray(scores, float), axis=0)))


def median_score(scores: np.ndarray) -> float:
    return float(np.median(np.mean(np.asarray(scores, float), axis=0)))


def optimality_gap(scores: np.ndarray, gamma: float = 1.0) -> float:
    return float(gamma - np.mean(np.minimum(np.asarray(scores, float), gamma)))


AGGREGATES: dict[str, Callable[[np.ndarray], float]] = {
    "median": median_score, "iqm": iqm, "mean": mean_score, "optimality_gap": optimality_gap}


def stratified_bootstrap_ci(scores: np.ndarray, fn: Callable[[np.ndarray], float], reps: int = 2000,
                            seed: int = 0, confidence: float = 0.95) -> tuple[float, float, float]:
    """(point, low, high): the percentile CI of `fn` over `reps` stratified bootstrap samples of a
    (runs x tasks) matrix (each task's runs resampled with replacement, independently)."""
    scores = np.asarray(scores, float)
    if scores.ndim == 1:
        scores = scores[:, None]
    n, t = scores.shape
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(reps, n, t))
    stats = np.array([fn(np.take_along_axis(scores, idx[r], axis=0)) for r in range(reps)])
    alpha = (1 - confidence) / 2
    lo, hi = np.percentile(stats, [100 * alpha, 100 * (1 - alpha)])
    return fn(scores), float(lo), float(hi)


def bootstrap_mean_ci(values: Iterable[float], reps: int = 2000, seed: int = 0, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the percentile bootstrap CI of the mean of `values` (seeds of one task)."""
    x = np.asarray(list(values), float)
    if x.size == 0:
        raise UserError("no scores to summarise")
    if x.size == 1:
        return float(x[0]), float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(reps, x.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.percentile(means, [100 * alpha, 100 * (1 - alpha)])
    return float(x.mean()), float(lo), float(hi)


def performance_profile(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Fraction of runs above each tau, averaged over tasks (rliable's score distribution)."""
    scores = np.asarray(scores, float)
    if scores.ndim == 1:
        scores = scores[:, None]
    return np.array([np.mean(np.mean(scores > tau, axis=0)) for tau in taus])


# ----- runs ---------------------------------------------------------------------------------------
@dataclass
class Run:
    path: Path
    method: str
    env: str
    seed: int
    steps: int
    action_repeat: int
    score: Optional[float] = None
    error: Optional[str] = None
    curve: tuple[np.ndarray, np.ndarray] = field(default_factory=lambda: (np.zeros(0), np.zeros(0)))

    @property
    def suite(self) -> str:
        return self.env.split("/", 1)[0]


def find_runs(paths: Iterable[Path]) -> list[Path]:
    """Run directories (a config.yaml or a status.json) at or under `paths`, sorted."""
    out = set()
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise UserError(f"{p}: no such run or sweep directory")
        for marker in ("config.yaml", "status.json"):
            if (p / marker).is_file():
                out.add(p)
            out.update(c.parent for c in p.rglob(marker) if not NOT_RUNS & set(c.relative_to(p).parts))
    return sorted(out)


def _method(cfg) -> str:
    algo = str(cfg.algo.name) if cfg.get("algo") is not None else "?"
    model = cfg.get("model")
    return f"{algo}+{model.name}" if model is not None and model.get("name") else algo


def _action_repeat(cfg) -> int:
    from mbrl.envs import suite_defaults

    kw = cfg.get("env_kwargs") or {}
    if kw.get("action_repeat"):
        return int(kw["action_repeat"])
    try:
        return int(suite_defaults(str(cfg.env).split("/", 1)[0]).get("action_repeat", 1))
    except UserError:
        return 1


def _rows(path: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, dict[int, float]] = defaultdict(dict)
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    with open(path) as f:
        for row in csv.DictReader(f):
            try:
                step, value = int(float(row["step"])), float(row["value"])
            except (KeyError, TypeError, ValueError):
                continue
            if row["key"] == "train/return":
                series[row["key"]].append((step, value))  # every episode counts
            else:
                out[row["key"]][step] = value  # a resumed run may repeat a step: the last value wins
    for k, d in out.items():
        series[k] = sorted(d.items())
    return series


def read_run(path: Path) -> Run:
    """One run directory: its method, env, seed and final score (or the error that stopped it)."""
    import json

    from omegaconf import OmegaConf

    from mbrl.envs.scores import ATARI100K_WINDOW_FRAMES, window_score

    status = {}
    if (path / "status.json").is_file():
        try:
            status = json.loads((path / "status.json").read_text())
        except ValueError:
            status = {}
    if not (path / "config.yaml").is_file():
        return Run(path, "?", "?", -1, 0, 1, error=status.get("error") or "no config.yaml")
    cfg = OmegaConf.load(path / "config.yaml")
    run = Run(path, _method(cfg), str(cfg.env), int(cfg.get("seed") or 0),
              int(cfg.get("steps") or (cfg.algo.get("steps") if cfg.get("algo") else 0) or 0), _action_repeat(cfg))
    if status.get("state") == "failed":
        run.error = status.get("error") or "failed"
        return run
    if status.get("state") in ("running", "interrupted"):  # a sweep's job that has not finished (mbrl.sweep)
        run.error = f"unfinished ({status['state']}{', ' + status['error'] if status.get('error') else ''})"
        return run
    if not (path / "metrics.csv").is_file():
        run.error = status.get("error") or "no metrics.csv (not started, or failed before training)"
        return run
    series = _rows(path / "metrics.csv")
    ev = series.get("eval/return", [])
    if ev:
        run.curve = (np.array([s for s, _ in ev], float), np.array([v for _, v in ev], float))
    if run.suite == "atari" and series.get("train/return"):
        tr = series["train/return"]
        budget = max(run.steps, max(s for s, _ in tr)) * run.action_repeat
        run.score = window_score([s * run.action_repeat for s, _ in tr], [v for _, v in tr], budget, ATARI100K_WINDOW_FRAMES)
    elif ev:
        run.score = ev[-1][1]
    else:
        run.error = status.get("error") or "no eval/return in metrics.csv (unfinished?)"
    return run


def norm_score(env: str, score: float) -> tuple[float, str]:
    """The normalised score and its scale (`hns`, `d4rl`, `dmc` or `raw`)."""
    from mbrl.envs.scores import normalize

    value, scale = normalize(env, score)
    if scale == "raw" and env.startswith("dmc/"):
        scale = "dmc"
    return value, scale


# ----- published baselines ------------------------------------------------------------------------
def load_baselines() -> list[dict]:
    """Every row of mbrl/baselines/*.csv as {method, env, seed, score, frames, source}."""
    rows = []
    for f in sorted(BASELINES_DIR.glob("*.csv")):
        with open(f) as fh:
            for r in csv.DictReader(fh):
                if f.stem == "atari100k":
                    env, frames = "atari/" + r["task"], 400_000
                elif f.stem == "dmc":
                    env, frames = "dmc/" + r["task"], int(r["frames"])
                else:
                    env, frames = r["env"], int(float(r.get("frames") or 0))
                rows.append({"method": r["method"] + (" (vision)" if r.get("benchmark") == "dmc_vision" else ""),
                             "env": env, "seed": r.get("seed", "0"), "score": float(r["score"]),
                             "frames": frames, "source": r["source"], "pixels": r.get("benchmark") == "dmc_vision",
                             # d4rl.csv: published summaries (mean ± std over seeds), already D4RL-normalised
                             "std": float(r["std"]) if r.get("std") else None, "seeds": r.get("seeds") or "",
                             "normalized": f.stem == "d4rl"})
    return rows


def _same_task(a: str, b: str) -> bool:
    """Whether a baseline's env is the run's: D4RL datasets match by name without version
    (`d4rl/hopper-medium-replay-v5` here, D4RL's `-v2` in the published tables)."""
    if a.startswith("d4rl/") and b.startswith("d4rl/"):
        from mbrl.config import dataset_key

        return dataset_key(a) == dataset_key(b)
    return a == b


def baselines_for(env: str, frames: int, pixels: bool, table: list[dict]) -> dict[str, tuple[int, list[float], str]]:
    """method -> (frames, per-seed scores, source) for `env`, at the budget nearest `frames`."""
    by: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in table:
        if _same_task(r["env"], env) and (not env.startswith("dmc/") or r["pixels"] == pixels):
            by[r["method"]][r["frames"]].append(r)
    out = {}
    for m, per in by.items():
        f = min(per, key=lambda k: (abs(math.log(max(k, 1) / max(frames, 1))), -k))
        out[m] = (f, [r["score"] for r in per[f]], per[f][0]["source"])
    return out


def published_summary(env: str, method: str, table: list[dict]) -> Optional[dict]:
    """The row of a published summary (mean ± std, already normalised: d4rl.csv) for `env`, else None."""
    return next((r for r in table if r["method"] == method and r["normalized"] and _same_task(r["env"], env)), None)


# ----- the report ---------------------------------------------------------------------------------
def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def make_report(paths: list[Path], out: Path, reps: int = 2000, seed: int = 0, progress: bool = True) -> Path:
    dirs = find_runs(paths)
    if not dirs:
        raise UserError(f"no run directories (with config.yaml) under {', '.join(map(str, paths))}")
    runs = []
    for i, d in enumerate(dirs, 1):
        runs.append(read_run(d))
        if progress and (i == len(dirs) or i % 25 == 0):
            print(f"\rreading runs: {i}/{len(dirs)}", end="" if i < len(dirs) else "\n", file=sys.stderr, flush=True)
    ok = [r for r in runs if r.score is not None and r.error is None]
    failed = [r for r in runs if r.error is not None]
    for r in failed:
        print(f"skipped {r.path}: {r.error}", file=sys.stderr)
    if not ok:
        raise UserError(f"none of the {len(runs)} runs has a score (failed: {len(failed)})")
    out.mkdir(parents=True, exist_ok=True)
    table = load_baselines()

    # per run
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "env", "seed", "steps", "score", "normalized", "scale", "run_dir"])
        for r in ok:
            n, scale = norm_score(r.env, r.score)
            w.writerow([r.method, r.env, r.seed, r.steps, f"{r.score:.6g}", f"{n:.6g}", scale, r.path])

    # per task: the user's methods and the published ones
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for r in ok:
        groups[(r.env, r.method)].append(r)
    envs_ = sorted({r.env for r in ok})
    methods = sorted({r.method for r in ok})
    task_rows = []  # (env, method, published?, frames, n, mean, lo, hi, norm mean, scale, source)
    per_method_scores: dict[str, dict[str, list[float]]] = defaultdict(dict)  # method -> env -> normalised seeds
    for env in envs_:
        for m in methods:
            rs = groups.get((env, m))
            if not rs:
                continue
            mean, lo, hi = bootstrap_mean_ci([r.score for r in rs], reps, seed)
            normed = [norm_score(env, r.score)[0] for r in rs]
            scale = norm_score(env, rs[0].score)[1]
            frames = max(r.steps for r in rs) * rs[0].action_repeat
            task_rows.append((env, m, False, frames, len(rs), mean, lo, hi, float(np.mean(normed)), scale, "this run"))
            per_method_scores[m][env] = [x / AGG_DIVISOR[scale] for x in normed]
        rs0 = [r for r in ok if r.env == env]
        frames = max(r.steps for r in rs0) * rs0[0].action_repeat
        pixels = any(bool((OmegaConf_load(r.path).get("env_kwargs") or {}).get("pixels")) for r in rs0) if env.startswith("dmc/") else False
        for m, (f, scores, src) in sorted(baselines_for(env, frames, pixels, table).items()):
            summary = published_summary(env, m, table)
            if summary is not None:  # a published mean ± std of normalised scores: shown as published, no raw score
                n = int(summary["seeds"]) if str(summary["seeds"]).isdigit() else 0
                nan = float("nan")
                task_rows.append((env, m, True, f, n, nan, nan, nan, summary["score"], "d4rl", src, summary["std"]))
                per_method_scores[m][env] = [summary["score"] / AGG_DIVISOR["d4rl"]]
                continue
            mean, lo, hi = bootstrap_mean_ci(scores, reps, seed)
            normed = [norm_score(env, s)[0] for s in scores]
            scale = norm_score(env, scores[0])[1]
            task_rows.append((env, m, True, f, len(scores), mean, lo, hi, float(np.mean(normed)), scale, src))
            per_method_scores[m][env] = [x / AGG_DIVISOR[scale] for x in normed]
    with open(out / "tasks.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["env", "method", "published", "frames", "n", "mean", "ci_low", "ci_high", "normalized_mean", "scale", "source",
                    "published_std"])
        for t in task_rows:
            std = f"{t[11]:.6g}" if len(t) > 11 and t[11] is not None else ""
            w.writerow([t[0], t[1], int(t[2]), t[3], t[4] or "", *("" if math.isnan(x) else f"{x:.6g}" for x in t[5:8]),
                        f"{t[8]:.6g}", t[9], t[10], std])

    # aggregates per scale family (suite), over the tasks every compared method has
    agg_rows = []  # (suite, method, metric, point, lo, hi, n_tasks)
    for suite in sorted({e.split("/", 1)[0] for e in envs_}):
        tasks = [e for e in envs_ if e.startswith(suite + "/")]
        mine = [m for m in methods if all(e in per_method_scores[m] for e in tasks)] or \
               [m for m in methods if any(e in per_method_scores[m] for e in tasks)]
        published = sorted({t[1] for t in task_rows if t[2] and t[0] in tasks})
        for m in [*mine, *published]:
            have = [e for e in tasks if e in per_method_scores[m]]
            if m in published and len(have) < len(tasks):
                continue  # a published method is aggregated only over all of the user's tasks
            k = min(len(per_method_scores[m][e]) for e in have)
            mat = np.array([per_method_scores[m][e][:k] for e in have]).T  # runs x tasks
            for metric, fn in AGGREGATES.items():
                if metric == "optimality_gap" and suite not in ("atari", "d4rl", "dmc"):
                    continue  # a gap to 1 means something on a normalised scale only
                p, lo, hi = stratified_bootstrap_ci(mat, fn, reps, seed)
                agg_rows.append((suite, m, metric, p, lo, hi, len(have)))
    with open(out / "aggregates.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["suite", "method", "metric", "value", "ci_low", "ci_high", "tasks"])
        for a in agg_rows:
            w.writerow([a[0], a[1], a[2], f"{a[3]:.6g}", f"{a[4]:.6g}", f"{a[5]:.6g}", a[6]])

    pngs = _plots(out, ok, envs_, methods, agg_rows, per_method_scores)
    _markdown(out, paths, ok, failed, task_rows, agg_rows, pngs)
    return out / "report.md"


def OmegaConf_load(path: Path):
    from omegaconf import OmegaConf

    return OmegaConf.load(path / "config.yaml")


def _plots(out: Path, ok: list[Run], envs_: list[str], methods: list[str], agg_rows, per_method_scores) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for env in envs_:
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in methods:
            rs = [r for r in ok if r.env == env and r.method == m and r.curve[0].size]
            if not rs:
                continue
            end, start = min(r.curve[0][-1] for r in rs), max(r.curve[0][0] for r in rs)
            grid = np.linspace(start, end, 50) if end > start else np.array([end])
            ys = np.stack([np.interp(grid, *r.curve) for r in rs])
            mean = ys.mean(0)
            if len(rs) > 1:  # 95% CI of the mean over seeds (normal approximation per step)
                half = 1.96 * ys.std(0, ddof=1) / math.sqrt(len(rs))
            else:
                half = np.zeros_like(mean)
            style = "-" if grid.size > 1 else "o"
            line, = ax.plot(grid, mean, style, label=f"{m} (n={len(rs)})")
            ax.fill_between(grid, mean - half, mean + half, color=line.get_color(), alpha=0.25, lw=0)
        ax.set_xlabel("env steps")
        ax.set_ylabel("eval/return")
        ax.set_title(env)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = f"curves_{_safe(env)}.png"
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        written.append(name)
    suites = sorted({a[0] for a in agg_rows})
    for suite in suites:
        rows = [a for a in agg_rows if a[0] == suite]
        ms = list(dict.fromkeys(a[1] for a in rows))
        metrics = [m for m in AGGREGATES if any(a[2] == m for a in rows)]
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 0.5 * len(ms) + 1.5), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            for i, m in enumerate(ms):
                a = next(a for a in rows if a[1] == m and a[2] == metric)
                ax.barh(i, a[5] - a[4], left=a[4], height=0.6, alpha=0.6, color=f"C{i % 10}")
                ax.plot([a[3], a[3]], [i - 0.3, i + 0.3], color="k", lw=1.5)
            ax.set_yticks(range(len(ms)), ms if metric == "median" else [""] * len(ms), fontsize=8)
            ax.set_title(metric.replace("_", " "), fontsize=9)
            ax.grid(axis="x", alpha=0.3)
        scale = {"atari": "human-normalised", "d4rl": "D4RL-normalised / 100", "dmc": "return / 1000"}.get(suite, "raw return")
        fig.suptitle(f"{suite}: {scale}, 95% stratified bootstrap CIs", fontsize=9)
        fig.tight_layout()
        name = f"aggregates_{suite}.png"
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        written.append(name)
        # performance profiles over the same methods
        fig, ax = plt.subplots(figsize=(5, 3.5))
        tasks = [e for e in envs_ if e.startswith(suite + "/")]
        allv = np.concatenate([np.concatenate([per_method_scores[m][e] for e in tasks if e in per_method_scores[m]]) for m in ms])
        taus = np.linspace(allv.min(), allv.max(), 101) if allv.max() > allv.min() else np.array([allv.min()])
        for m in ms:
            k = min(len(per_method_scores[m][e]) for e in tasks if e in per_method_scores[m])
            mat = np.array([per_method_scores[m][e][:k] for e in tasks if e in per_method_scores[m]]).T
            ax.plot(taus, performance_profile(mat, taus), label=m)
        ax.set_xlabel(f"normalised score ({scale}) τ")
        ax.set_ylabel("fraction of runs > τ")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"profiles_{suite}.png"
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        written.append(name)
    return written


def _markdown(out: Path, paths, ok, failed, task_rows, agg_rows, pngs) -> None:
    lines = [f"# Report: {', '.join(str(p) for p in paths)}", "",
             f"`python -m mbrl.report {' '.join(str(p) for p in paths)} --out {out}` — {len(ok)} runs scored, {len(failed)} failed or unfinished.", "",
             "## Per task", "",
             "Final score: mean over seeds and its 95% bootstrap CI (Atari: the mean of the training episode returns in the last 10k of the "
             "frames; others: the last evaluation). Published rows (*) at the budget nearest the run's, with their source.", "",
             "| task | method | frames | seeds | score (95% CI) | normalised | source |", "|---|---|---|---|---|---|---|"]
    for t in task_rows:
        if len(t) > 11:  # a published summary of normalised scores (D4RL tables): mean ± std as published
            lines.append(f"| {t[0]} | {t[1]} * | - | {t[4] or '?'} | - | {_fmt(t[8])} ± {_fmt(t[11])} sd ({t[9]}) | {t[10]} |")
            continue
        lines.append(f"| {t[0]} | {t[1]}{' *' if t[2] else ''} | {t[3]:,} | {t[4]} | {_fmt(t[5])} [{_fmt(t[6])}, {_fmt(t[7])}] | "
                     f"{_fmt(t[8])} ({t[9]}) | {t[10]} |")
    lines += ["", "## Aggregates", "",
              "Over the tasks of each suite (a published method only where it has all of them); 95% stratified bootstrap CIs.", "",
              "| suite | method | tasks | median | IQM | mean | optimality gap |", "|---|---|---|---|---|---|---|"]
    seen = []
    summaries = {t[1] for t in task_rows if len(t) > 11}  # published as per-dataset means: no runs to resample
    for a in agg_rows:
        if (a[0], a[1]) in seen:
            continue
        seen.append((a[0], a[1]))
        cells = []
        for metric in ("median", "iqm", "mean", "optimality_gap"):
            b = next((x for x in agg_rows if x[0] == a[0] and x[1] == a[1] and x[2] == metric), None)
            if b and a[1] in summaries:
                cells.append(f"{_fmt(b[3])} (of the published means)")
                continue
            cells.append(f"{_fmt(b[3])} [{_fmt(b[4])}, {_fmt(b[5])}]" if b else "n/a (raw scale)")
        lines.append(f"| {a[0]} | {a[1]} | {a[6]} | " + " | ".join(cells) + " |")
    lines += ["", "## Figures", ""] + [f"![{p}]({p})" for p in pngs]
    if failed:
        lines += ["", "## Failed or unfinished runs", ""] + [f"- `{r.path}`: {r.error}" for r in failed]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mbrl.report", description="Tables and figures from runs or sweeps, beside the published baselines.")
    p.add_argument("paths", nargs="+", type=Path, help="run directories or sweep directories (searched recursively)")
    p.add_argument("--out", type=Path, default=Path("report"), help="output directory (default: report/)")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    a = p.parse_args(argv)
    try:
        if a.reps < 1:
            raise UserError(f"--reps must be >= 1, got {a.reps}")
        md = make_report(a.paths, a.out, a.reps, a.seed, progress=not a.quiet)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
