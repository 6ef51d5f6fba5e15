"""Run logging: tensorboard events, metrics.csv (long format: step,key,value,wall_time), the experiment
tracker the run's config names (`logger=wandb|mlflow`, mbrl/utils/trackers.py) and a progress bar with
steps/s, ETA and the latest return."""
from __future__ import annotations

import csv
import math
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Optional

from tqdm import tqdm


class Logger:
    def __init__(self, run_dir: Optional[str | Path], total_steps: int, start_step: int = 0, progress: bool = True, tensorboard: bool = True,
                 wall_offset: float = 0.0):
        """`start_step` / `wall_offset`: where a resumed run continues (its checkpoint's step and
        wall-clock seconds); tensorboard keeps the points up to and including `start_step`."""
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._means: dict[str, list[float]] = defaultdict(list)
        self._start = time.time() - float(wall_offset)
        self.latest: dict[str, float] = {}
        self._csv_file = None
        self._tb = None
        self._tracker = None
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            path = self.run_dir / "metrics.csv"
            new = not path.exists()
            self._csv_file = open(path, "a", newline="")
            self._csv = csv.writer(self._csv_file)
            if new:
                self._csv.writerow(["step", "key", "value", "wall_time"])
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=start_step + 1 if start_step else None)
            from mbrl.utils.trackers import open_tracker

            self._tracker = open_tracker(self.run_dir)  # wandb / mlflow, as config.yaml's `logger` says
        self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, disable=not progress, file=sys.stderr, smoothing=0.05)

    def elapsed(self) -> float:
        """Wall-clock seconds of the run so far (continued across resumes)."""
        return time.time() - self._start

    def accumulate(self, metrics: dict[str, float]) -> None:
        """Collect training metrics; their means are written at the next `flush`."""
        for k, v in metrics.items():
            self._means[k].append(float(v))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        wall = self.elapsed()
        finite = {}
        for k, v in metrics.items():
            v = float(v)
            self.latest[k] = v
            if self._csv_file is not None:
                self._csv.writerow([step, k, f"{v:.6g}", f"{wall:.1f}"])
            if math.isfinite(v):
                finite[k] = v
                if self._tb is not None:
                    self._tb.add_scalar(k, v, step)
        if self._tracker is not None and finite:
            self._tracker.log(step, finite)  # the same scalars at the same step as tensorboard
        if self._csv_file is not None:
            self._csv_file.flush()

    def flush(self, step: int) -> None:
        if self._means:
            self.log(step, {k: sum(v) / len(v) for k, v in self._means.items()})
            self._means.clear()
        if self._tb is not None:
            self._tb.flush()

    def video(self, tag: str, frames, step: int, fps: float = 10.0) -> None:
        """A video (uint8 frames [T, H, W, 3]) to tensorboard as an animated GIF image, the summary
        `SummaryWriter.add_video` writes (encoded here with Pillow instead of moviepy)."""
        if self._tb is None:
            return
        from tensorboard.compat.proto.summary_pb2 import Summary

        from mbrl.utils.video import as_frames, gif_bytes

        frames = as_frames(frames)
        _, h, w, c = frames.shape
        image = Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=gif_bytes(frames, fps))
        self._tb._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    def progress(self, n: int) -> None:
        self._bar.update(n)
        post = {}
        for key, name in (("train/return", "return"), ("eval/return", "eval")):
            if key in self.latest:
                post[name] = f"{self.latest[key]:.1f}"
        if post:
            self._bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None
        if self._csv_file is not None:
            self._csv_file.close()


def trim_metrics(path: str | Path, last_step: int) -> int:
    """Drop the rows of a metrics.csv logged after `last_step` (a resumed run re-logs them from its
    checkpoint, so they would appear twice); atomic. Returns how many rows were dropped."""
    from mbrl.utils.checkpoint import atomic_write

    path = Path(path)
    if not path.is_file():
        return 0
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return 0
    keep = [rows[0]] + [r for r in rows[1:] if r and _step(r[0]) <= last_step]
    dropped = len(rows) - len(keep)
    if dropped:
        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                csv.writer(f).writerows(keep)

        atomic_write(path, write)
    return dropped


def _step(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.inf
