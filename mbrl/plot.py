"""Learning curves: `python -m mbrl.plot <run_dir>... [--key eval/return] [--out curves.png]`.

Each curve is one setting, labelled by the algo, model and env of its runs' config.yaml
(`pets + ensemble on toy/point`, `sac on toy/point`); its runs (seeds) are drawn as the mean
with a min–max band and a ±1 std band, on a common step grid (linear interpolation, up to the
shortest run). `--label` (one per run) names the settings instead; a run without config.yaml is
labelled by its parent directory. A setting whose runs share a single step (one evaluation) is drawn
as a marker with ±1 std error bars. The PNG carries what it shows as text metadata (`mbrl:curves`:
each curve's label, runs, points, marker and its points' pixel positions), so scripts and tests can
read a figure back.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from mbrl.errors import UserError

#: PNG text key holding the drawn curves (JSON)
META_KEY = "mbrl:curves"


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


def run_label(run_dir: Path) -> str:
    """`<algo> + <model> on <env>` from the run's config.yaml (`<algo> on <env>` without a model);
    without a config, the run's parent directory (`runs/<algo>/<env>/<date>` -> `<env>`)."""
    cfg_path = run_dir / "config.yaml"
    if cfg_path.is_file():
        from omegaconf import OmegaConf

        try:
            cfg = OmegaConf.load(cfg_path)
        except Exception as e:  # noqa: BLE001 - a damaged file is the user's to fix; say which
            raise UserError(f"{cfg_path}: unreadable config ({type(e).__name__}); remove the run or pass --label") from None
        algo = cfg.get("algo")
        model = cfg.get("model")
        a = str(algo.get("name")) if algo is not None and algo.get("name") else None
        m = str(model.get("name")) if model is not None and model.get("name") else None
        env = str(cfg.get("env")) if cfg.get("env") else None
        if a or env:
            who = " + ".join(x for x in (a, m) if x) or "run"
            return f"{who} on {env}" if env else who
    return str(run_dir.parent.relative_to(run_dir.parents[2])) if len(run_dir.parents) > 2 else run_dir.parent.name


def group_runs(run_dirs: list[Path], labels: list[str] | None) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = defaultdict(list)
    for i, d in enumerate(run_dirs):
        groups[labels[i] if labels else run_label(d)].append(d)
    return groups


def plot(run_dirs: list[Path], out: Path, key: str = "eval/return", labels: list[str] | None = None, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dpi = 120
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=dpi)
    drawn = []
    for label, dirs in group_runs(run_dirs, labels).items():
        curves = [read_curve(d, key) for d in dirs]
        end = min(c[0][-1] for c in curves)
        start = max(c[0][0] for c in curves)
        grid = np.linspace(start, end, 100) if end > start else np.array([end])
        ys = np.stack([np.interp(grid, s, v) for s, v in curves])
        mean, std = ys.mean(0), ys.std(0)
        name = f"{label} (n={len(dirs)})"
        if len(grid) == 1:  # one evaluation (or runs that share one step): a marker, spread as error bars
            bars = ax.errorbar(grid, mean, yerr=std if len(dirs) > 1 else None, fmt="o", ms=8, capsize=4, label=name)
            color = bars.lines[0].get_color()
        else:
            line, = ax.plot(grid, mean, label=name)
            color = line.get_color()
            if len(dirs) > 1:
                ax.fill_between(grid, ys.min(0), ys.max(0), color=color, alpha=0.12, lw=0)
                ax.fill_between(grid, mean - std, mean + std, color=color, alpha=0.25, lw=0)
        drawn.append(dict(label=name, runs=len(dirs), points=int(len(grid)), marker=len(grid) == 1, color=matplotlib.colors.to_hex(color),
                          x=grid, y=mean))
    if len(drawn) == 1 and drawn[0]["marker"]:  # a lone point: give the axes some room around it
        x0, y0 = float(drawn[0]["x"][0]), float(drawn[0]["y"][0])
        ax.set_xlim(x0 - max(abs(x0), 1.0) * 0.5, x0 + max(abs(x0), 1.0) * 0.5)
    ax.set_xlabel("env steps")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.canvas.draw()
    height = fig.canvas.get_width_height()[1]
    meta = []
    for c in drawn:  # where the curve's points landed in the saved image (pixel column, row)
        xy = ax.transData.transform(np.c_[c.pop("x"), c.pop("y")])
        c["pixels"] = [[round(float(px), 1), round(float(height - py), 1)] for px, py in xy[:: max(1, len(xy) // 20)]]
        meta.append(c)
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {META_KEY: json.dumps({"key": key, "curves": meta})} if out.suffix.lower() == ".png" else None
    fig.savefig(out, dpi=dpi, metadata=metadata)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mbrl.plot", description="Draw learning curves (mean and spread over seeds) to a PNG.")
    p.add_argument("runs", nargs="+", type=Path, help="run directories (each with metrics.csv)")
    p.add_argument("--key", default="eval/return", help="metric to plot (default eval/return)")
    p.add_argument("--out", type=Path, default=Path("curves.png"))
    p.add_argument("--label", action="append", help="one label per run (default: algo + model on env, from the run's config.yaml)")
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
