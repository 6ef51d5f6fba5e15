"""The model registry: every backbone registers under its name with one constructor signature.

    @register("rssm")
    class RSSM(WorldModel): ...

    model = build(cfg.model, obs_space, action_space, seed)   # cfg.model["name"] picks the backbone

A backbone is one file in this package (plus one config, `configs/model/<name>.yaml`): every module
here is imported on first use of the registry, so a file that registers itself is found — by
`python -m mbrl.train model=<name>`, by every algorithm, and by the contract and matrix tests —
without an edit anywhere else. Algorithms and learners never import a backbone module; they get
models from here and talk to `WorldModel` (mbrl/models/base.py) alone.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Iterable, Mapping, Optional

from mbrl.errors import UserError
from mbrl.models.base import SIGNALS, Members, State, Tracker, Trajectory, WorldModel

__all__ = ["register", "build", "names", "get", "providers", "require_signals", "WorldModel", "State", "Trajectory", "Tracker", "Members"]

_REGISTRY: dict[str, type[WorldModel]] = {}
#: modules of this package that hold shared parts, not backbones
SHARED = {"base", "nets", "dists", "parts", "ensemble_heads", "edm", "openloop"}
_discovered = False


def register(name: str):
    """Class decorator: make a WorldModel subclass available as `model=<name>`."""

    def deco(cls: type[WorldModel]) -> type[WorldModel]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model {name!r} is registered twice ({_REGISTRY[name].__module__}, {cls.__module__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for mod in pkgutil.iter_modules(__path__):
        if mod.name not in SHARED and not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def names() -> list[str]:
    """Registered backbone names, sorted."""
    _discover()
    return sorted(_REGISTRY)


def get(name: str) -> type[WorldModel]:
    _discover()
    if name not in _REGISTRY:
        raise UserError(f"unknown model {name!r}; valid: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build(cfg: Mapping, obs_space: Any, action_space: Any, seed: Optional[int] = None) -> WorldModel:
    """The model that `cfg["name"]` names, from its config group, for these spaces."""
    cfg = dict(cfg)
    if not cfg.get("name"):
        raise UserError(f"no model is named; add model=<name> (valid: {', '.join(names())})")
    return get(str(cfg["name"])).from_config(cfg, obs_space, action_space, seed)


def providers(signal: str) -> list[str]:
    """Backbones whose own uncertainty includes `signal` (any backbone gains all with model.heads>0)."""
    return [n for n in names() if signal in _REGISTRY[n].native_signals]


def require_signals(model: WorldModel, needed: Iterable[str], who: str) -> None:
    """Fail at build time with one line when `model` lacks a signal that `who` needs."""
    missing = [s for s in needed if s not in model.signals]
    if missing:
        s = missing[0]
        raise UserError(f"{who} needs the uncertainty signal {s!r}, which model={model.name} does not provide; "
                        f"backbones that provide it: {', '.join(providers(s)) or 'none'}, or any backbone with model.heads=5 "
                        f"(an ensemble of heads over its features; signals: {', '.join(SIGNALS)})")
