"""Learning curves: `python -m mbrl.plot <run_dir>... [--key eval/return] [--out curves.png]`.

Runs are grouped by their parent directory (`runs/<algo>/<env>/`, i.e. seeds of one setting), or by
`--label` given per run; each group is drawn as the mean over its runs with a min–max band and a
±1 std band, on a common step grid (linear interpolation, up to the shortest run).
"""
from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from mbrl.errors import UserError


def read_curve(run_dir: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        raise UserError(f"{run_dir}: no metrics.csv (is it a run directory?)")
    steps, values = [], []
    with open(path) as f:
        for row in csv.DictReader(f):
            if row["key"] == key:
                steps.append(int(row["step"]))
                values.append(float(row["value"]))
    if not steps:
        raise UserError(f"{path}: no {key!r} rows")
    order = np.argsort(steps, kind="stable")
    s, v = np.asarray(steps)[order], np.asarray(values)[order]
    # a resumed run may repeat a step: keep the last value written for it
    last = np.r_[s[1:] != s[:-1], True]
    return s[last], v[last]


def group_runs(run_dirs: list[Path], labels: list[str] | None) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = defaultdict(list)
    for i, d in enumerate(run_dirs):
        label = labels[i] if labels else (str(d.parent.relative_to(d.parents[2])) if len(d.parents) > 2 else d.parent.name)
        groups[label].append(d)
    return groups


def plot(run_dirs: list[Path], out: Path, key: str = "eval/return", labels: list[str] | None = None, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, dirs in group_runs(run_dirs, labels).items():
        curves = [read_curve(d, key) for d in dirs]
        end = min(c[0][-1] for c in curves)
        start = max(c[0][0] for c in curves)
        grid = np.linspace(start, end, 100) if end > start else np.array([end])
        ys = np.stack([np.interp(grid, s, v) for s, v in curves])
        mean, std = ys.mean(0), ys.std(0)
        line, = ax.plot(grid, mean, label=f"{label} (n={len(dirs)})")
        if len(dirs) > 1:
            ax.fill_between(grid, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.12, lw=0)
            ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.25, lw=0)
    ax.set_xlabel("env steps")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mbrl.plot", description="Draw learning curves (mean and spread over seeds) to a PNG.")
    p.add_argument("runs", nargs="+", type=Path, help="run directories (each with metrics.csv)")
    p.add_argument("--key", default="eval/return", help="metric to plot (default eval/return)")
    p.add_argument("--out", type=Path, default=Path("curves.png"))
    p.add_argument("--label", action="append", help="one label per run (default: the run's parent dir)")
    p.add_argument("--title")
    a = p.parse_args(argv)
    if a.label and len(a.label) != len(a.runs):
        print(f"error: got {len(a.label)} --label for {len(a.runs)} runs; give one per run or none", file=sys.stderr)
        return 2
    try:
        out = plot(a.runs, a.out, a.key, a.label, a.title)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
