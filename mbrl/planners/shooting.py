"""Random shooting: uniform action sequences in the bounds (plus the warm-start sequence); the best wins."""
from __future__ import annotations

from typing import Optional

import torch

from mbrl.planners.base import Planner, ScoreFn
from mbrl.planners.common import as_bounds, check_proposals, safe_score, shifted_mean
from mbrl.errors import UserError


class RandomShooting(Planner):
    def __init__(self, action_dim: int, population: int = 1000, device="cpu", seed: Optional[int] = None):
        super().__init__(action_dim, device, seed)
        if population < 1:
            raise UserError(f"population must be >= 1, got {population}")
        self.population = population

    @torch.no_grad()
    def plan(self, score_fn: ScoreFn, action_low, action_high, horizon: int, proposals: Optional[torch.Tensor] = None) -> torch.Tensor:
        lo, hi = as_bounds(action_low, action_high, self.action_dim, self.device)
        props = check_proposals(proposals, horizon, self.action_dim, self.population, lo, hi)
        u = torch.rand(self.population, horizon, self.action_dim, generator=self.generator, device=self.device)
        cand = lo + (hi - lo) * u
        cand[0] = shifted_mean(self._prev, horizon, lo, hi).clamp(lo, hi) if self._prev is not None else cand[0]
        if props is not None:  # rows 1..P: the policy's proposals (row 0 is the warm start)
            cand = torch.cat([cand[:1], props, cand[1 + props.shape[0]:]], 0)
        scores = safe_score(score_fn, cand)
        best = cand[int(torch.argmax(scores))].clone()
        self._prev = best
        self.last_score = float(scores.max())
        return best
