"""What every benchmark shares: the guard that keeps committed `results/` files.

A benchmark names the files it will write with `claim(...)` before it measures anything (so a
mistake costs no benchmark time) and writes them only through `write_result` / `claim`. An existing
file is refused with one line naming it unless `python -m mbrl.bench <name> --overwrite` was given
(`OVERWRITE`, set by mbrl/bench/__main__.py for every benchmark).
"""
from __future__ import annotations

from pathlib import Path

from mbrl.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"

#: set from `--overwrite` (every benchmark has the flag); False: existing files are never replaced
OVERWRITE = False


def results_path(name: str | Path) -> Path:
    """`name` under results/ (an absolute path is kept)."""
    p = Path(name)
    return p if p.is_absolute() else RESULTS / p


def _shown(p: Path) -> str:
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def claim(*names: str | Path) -> list[Path]:
    """The paths of results files about to be written; an existing one without `--overwrite` is a
    UserError naming it (one line)."""
    paths = [results_path(n) for n in names]
    if not OVERWRITE:
        for p in paths:
            if p.exists():
                raise UserError(f"{_shown(p)} exists (a committed result); pass --overwrite to replace it")
    return paths
