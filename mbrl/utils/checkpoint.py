"""Crash-safe checkpoints: write to a temp file in the same directory, fsync, then rename.

A run killed mid-write leaves the previous checkpoint whole and loadable.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from mbrl.errors import UserError


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)`, then atomically move tmp_path to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def save_checkpoint(obj: Any, path: str | Path) -> Path:
    return atomic_write(path, lambda p: torch.save(obj, p))


def load_checkpoint(path: str | Path, map_location: Any = "cpu", keys: tuple[str, ...] = ()) -> Any:
    """Read a checkpoint; a missing, empty, truncated or foreign file is a UserError naming it (never a
    traceback from the unpickler). `keys`: entries a dict checkpoint must have."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"checkpoint {path} is empty (0 bytes)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 (zipfile, pickle, EOF and torch errors alike: a damaged file)
        what = str(e).strip().splitlines()[0][:120] if str(e).strip() else ""
        raise UserError(f"checkpoint {path} is damaged or not a checkpoint ({size} bytes; {type(e).__name__}{': ' + what if what else ''})") from None
    missing = [k for k in keys if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise UserError(f"{path} is not an mbrl checkpoint (no {', '.join(missing)})")
    return obj
