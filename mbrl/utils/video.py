"""Videos from uint8 frames [T, H, W, 3]: `write_video(path, frames, fps)` writes .gif (Pillow) or
.mp4 (H.264 through imageio-ffmpeg); `gif_bytes` encodes a GIF in memory (tensorboard videos).

GIF keeps every frame's content; Pillow merges a frame identical to the one before it into that
frame's duration, so the total duration is always `T / fps`. MP4 frames are padded with black to even
sides (yuv420p needs them); the file then holds exactly T frames.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np

from mbrl.errors import UserError

FORMATS = (".gif", ".mp4")


def as_frames(frames: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Frames as one uint8 array [T, H, W, 3] (grayscale [T, H, W] or [T, H, W, 1] repeated to RGB)."""
    arr = np.asarray(frames)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4) or len(arr) == 0:
        raise UserError(f"video frames of shape {arr.shape}; valid: [T>0, H, W, 3] (or 1 channel)")
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, -1)
    return np.ascontiguousarray(arr[..., :3])


def _gif(frames: np.ndarray, fp, fps: float) -> None:
    from PIL import Image

    ms = max(10, int(round(1000.0 / fps)))  # GIF delays are in 1/100 s: 10 ms is the finest step
    images = [Image.fromarray(f) for f in frames]
    images[0].save(fp, format="GIF", save_all=True, append_images=images[1:], duration=ms, loop=0)


def gif_bytes(frames: Sequence[np.ndarray] | np.ndarray, fps: float = 10.0) -> bytes:
    buf = io.BytesIO()
    _gif(as_frames(frames), buf, fps)
    return buf.getvalue()


def write_video(path: str | Path, frames: Sequence[np.ndarray] | np.ndarray, fps: float = 30.0) -> Path:
    """Write `frames` to `path` (.gif or .mp4); returns the path. A bad suffix or a missing encoder
    is a UserError with one line."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UserError(f"video file {path}: unknown format {suffix or '(none)'!r}; valid: {', '.join(FORMATS)}")
    arr = as_frames(frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        _gif(arr, path, fps)
        return path
    try:
        import imageio_ffmpeg  # noqa: F401  (the ffmpeg binary imageio's mp4 writer runs)
    except ImportError:
        raise UserError(f"video file {path}: .mp4 needs the imageio-ffmpeg package (pip install imageio-ffmpeg); valid without it: a .gif path") from None
    import imageio.v2 as imageio

    pad_h, pad_w = arr.shape[1] % 2, arr.shape[2] % 2
    if pad_h or pad_w:
        arr = np.pad(arr, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    with imageio.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=1) as w:
        for f in arr:
            w.append_data(f)
    return path
