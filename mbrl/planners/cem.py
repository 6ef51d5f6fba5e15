"""Cross-entropy method (as in PETS / mbrl-lib): truncated-Gaussian samples whose variance is limited
by the distance to the bounds, elites refit the mean / variance with momentum `alpha`."""
from __future__ import annotations

from typing import Optional

import torch

from mbrl.planners.base import Planner, ScoreFn
from mbrl.planners.common import as_bounds, check_proposals, safe_score, shifted_mean, with_proposals
from mbrl.errors import UserError


def truncated_normal_(t: torch.Tensor, generator: Optional[torch.Generator], limit: float = 2.0) -> torch.Tensor:
    """Fill t with N(0, 1) samples truncated to [-limit, limit] (resampling the rest, then clamping)."""
    t.normal_(generator=generator)
    for _ in range(4):
        bad = t.abs() > limit
        if not bool(bad.any()):
            break
        t[bad] = torch.randn(int(bad.sum()), generator=generator, device=t.device)
    return t.clamp_(-limit, limit)


class CEM(Planner):
    def __init__(
        self,
        action_dim: int,
        population: int = 500,
        iterations: int = 5,
        elite_ratio: float = 0.1,
        alpha: float = 0.1,
        init_std: Optional[float] = None,
        return_mean_elites: bool = False,
        device="cpu",
        seed: Optional[int] = None,
    ):
        super().__init__(action_dim, device, seed)
        if population < 2 or iterations < 1 or not 0 < elite_ratio <= 1:
            raise UserError(f"need population >= 2, iterations >= 1, 0 < elite_ratio <= 1; got {population}, {iterations}, {elite_ratio}")
        self.population, self.iterations = population, iterations
        self.num_elites = max(1, int(round(elite_ratio * population)))
        self.alpha, self.init_std, self.return_mean_elites = alpha, init_std, return_mean_elites

    @torch.no_grad()
    def plan(self, score_fn: ScoreFn, action_low, action_high, horizon: int, proposals: Optional[torch.Tensor] = None) -> torch.Tensor:
        lo, hi = as_bounds(action_low, action_high, self.action_dim, self.device)
        props = check_proposals(proposals, horizon, self.action_dim, self.population, lo, hi)
        mu = shifted_mean(self._prev, horizon, lo, hi)
        std0 = (hi - lo) / 4 if self.init_std is None else torch.full_like(lo, self.init_std)
        var = (std0**2).expand(horizon, -1).clone()
        best, best_score = mu.clone(), -float("inf")
        noise = torch.empty(self.population, horizon, self.action_dim, device=self.device)
        for _ in range(self.iterations):
            # variance limited so that +-2 std stays inside the bounds
            mv = torch.minimum(torch.minimum(((mu - lo) / 2) ** 2, ((hi - mu) / 2) ** 2), var)
            cand = mu + truncated_normal_(noise, self.generator) * mv.sqrt()
            cand = with_proposals(torch.maximum(torch.minimum(cand, hi), lo), props)
            scores = safe_score(score_fn, cand)
            top, idx = torch.topk(scores, self.num_elites)
            elites = cand[idx]
            mu = self.alpha * mu + (1 - self.alpha) * elites.mean(0)
            var = self.alpha * var + (1 - self.alpha) * elites.var(0, unbiased=False)
            if float(top[0]) > best_score:
                best_score, best = float(top[0]), elites[0].clone()
        sol = mu if self.return_mean_elites else best
        self._prev = sol.clone()
        self.last_score = best_score
        return sol
