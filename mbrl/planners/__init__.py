"""Trajectory optimisers over a scoring function `score_fn(actions[N, H, A]) -> returns[N]`.

`make_planner(name, action_dim, **kwargs)` with name in random / cem / icem / mppi.
"""
from __future__ import annotations

from typing import Any

from mbrl.planners.base import Planner, ScoreFn
from mbrl.planners.cem import CEM
from mbrl.planners.icem import ICEM, colored_noise
from mbrl.planners.mppi import MPPI
from mbrl.planners.shooting import RandomShooting
from mbrl.errors import UserError

PLANNERS = {"random": RandomShooting, "cem": CEM, "icem": ICEM, "mppi": MPPI}


def make_planner(name: str, action_dim: int, **kwargs: Any) -> Planner:
    if name not in PLANNERS:
        raise UserError(f"unknown planner {name!r}; valid: {', '.join(PLANNERS)}")
    cls = PLANNERS[name]
    import inspect

    valid = set(inspect.signature(cls.__init__).parameters) - {"self", "action_dim"}
    bad = sorted(set(kwargs) - valid)
    if bad:
        raise UserError(f"planner {name!r} got unknown option(s) {bad}; valid: {sorted(valid)}")
    return cls(action_dim, **kwargs)


__all__ = ["Planner", "ScoreFn", "CEM", "ICEM", "MPPI", "RandomShooting", "make_planner", "colored_noise", "PLANNERS"]
