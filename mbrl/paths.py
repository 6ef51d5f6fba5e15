"""Where mbrl's files live, for both kinds of install.

`config_dir()` is the folder of the hydra configs (`config.yaml`, `model/`, `algo/`, `sweep/`, ...).
A wheel (`pip install .`) ships the repository's top-level `configs/` inside the package, as
`mbrl/configs/`; an editable install (`pip install -e .`) or a plain checkout keeps them at the
repository's top level, next to `mbrl/`. This module imports nothing heavy.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The hydra config folder: `mbrl/configs` when installed from a wheel, else `<repo>/configs`."""
    installed = PACKAGE_DIR / "configs"
    if installed.is_dir():
        return installed
    return PACKAGE_DIR.parent / "configs"
