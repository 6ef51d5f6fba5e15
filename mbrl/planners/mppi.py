"""MPPI (model-predictive path integral; the PDDM variant used by mbrl-lib): Gaussian perturbations,
temporally smoothed with `beta`, around the warm-started mean; the mean is refit as the
exp(gamma * (R - max R))-weighted average of the samples; the mean is executed."""
from __future__ import annotations

from typing import Optional

import torch

from mbrl.planners.base import Planner, ScoreFn
from mbrl.planners.common import as_bounds, safe_score, shifted_mean
from mbrl.errors import UserError


class MPPI(Planner):
    def __init__(
        self,
        action_dim: int,
        population: int = 500,
        iterations: int = 5,
        gamma: float = 10.0,
        sigma: float = 0.9,
        beta: float = 0.7,
        device="cpu",
        seed: Optional[int] = None,
    ):
        super().__init__(action_dim, device, seed)
        if population < 1 or iterations < 1 or gamma <= 0 or sigma <= 0 or not 0 < beta <= 1:
            raise UserError(f"need population >= 1, iterations >= 1, gamma > 0, sigma > 0, 0 < beta <= 1; got {population}, {iterations}, {gamma}, {sigma}, {beta}")
        self.population, self.iterations, self.gamma, self.sigma, self.beta = population, iterations, gamma, sigma, beta

    @torch.no_grad()
    def plan(self, score_fn: ScoreFn, action_low, action_high, horizon: int) -> torch.Tensor:
        lo, hi = as_bounds(action_low, action_high, self.action_dim, self.device)
        mu = shifted_mean(self._prev, horizon, lo, hi)
        scale = self.sigma * (hi - lo) / 2
        for _ in range(self.iterations):
            eps = torch.randn(self.population, horizon, self.action_dim, generator=self.generator, device=self.device) * scale
            # temporal smoothing u_t = beta * eps_t + (1 - beta) * u_{t-1}, vectorised as a weighted cumsum
            t = torch.arange(horizon, device=self.device, dtype=torch.float32)
            w = (1 - self.beta) ** (t.unsqueeze(0) - t.unsqueeze(1))  # [t_from, t_to]
            w = torch.triu(w) * self.beta
            u = torch.einsum("nfa,ft->nta", eps, w)
            cand = torch.maximum(torch.minimum(mu + u, hi), lo)
            scores = safe_score(score_fn, cand)
            wts = torch.softmax(self.gamma * (scores - scores.max()), 0)
            mu = (wts[:, None, None] * cand).sum(0)
        self._prev = mu.clone()
        self.last_score = float(scores.max())
        return mu
