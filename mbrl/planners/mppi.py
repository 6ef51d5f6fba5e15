"""MPPI (model-predictive path integral).

Default: the PDDM variant used by mbrl-lib: Gaussian perturbations of fixed std `sigma`, temporally
smoothed with `beta`, around the warm-started mean; the mean is refit as the exp(gamma * (R - max R))-
weighted average of all samples; the mean is executed.

TD-MPC2's variant (reference tdmpc2/tdmpc2.py `_plan`; configs/planner/mppi_tdmpc2.yaml, what algo=tdmpc2
uses): `num_elites` (64 of 512) top samples are weighted by exp(temperature * (R - max R)) with
gamma = temperature = 0.5, the std is refit from the elites and kept in [`std_min`, `std_max`] = [0.05, 2]
(starting at `std_max`, in units of half the action range), `beta` = 1 (no smoothing), and with
`sample_elite` the executed sequence is an elite drawn with probability ∝ its weight (the reference's
Gumbel-softmax sample); `last_std` is the final std of the first step (the reference adds
std * N(0, 1) to the action while exploring). `proposals` (e.g. 24 policy-prior rollouts) replace as
many samples in every iteration; all candidates of an iteration are scored in one call.
"""
from __future__ import annotations

from typing import Optional

import torch

from mbrl.planners.base import Planner, ScoreFn
from mbrl.planners.common import as_bounds, check_proposals, safe_score, shifted_mean, with_proposals
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
        num_elites: Optional[int] = None,
        std_min: Optional[float] = None,
        std_max: Optional[float] = None,
        sample_elite: bool = False,
        device="cpu",
        seed: Optional[int] = None,
    ):
        super().__init__(action_dim, device, seed)
        if population < 1 or iterations < 1 or gamma <= 0 or sigma <= 0 or not 0 < beta <= 1:
            raise UserError(f"need population >= 1, iterations >= 1, gamma > 0, sigma > 0, 0 < beta <= 1; got {population}, {iterations}, {gamma}, {sigma}, {beta}")
        if num_elites is not None and not 1 <= num_elites <= population:
            raise UserError(f"planner.num_elites={num_elites}; valid: null (all samples) or 1..population ({population})")
        if (std_min is None) != (std_max is None) or (std_min is not None and not 0 < std_min <= std_max):
            raise UserError(f"planner.std_min={std_min}, std_max={std_max}; valid: both null (fixed sigma) or 0 < std_min <= std_max")
        self.population, self.iterations, self.gamma, self.sigma, self.beta = population, iterations, gamma, sigma, beta
        self.num_elites, self.std_min, self.std_max, self.sample_elite = num_elites, std_min, std_max, bool(sample_elite)
        self.last_std: Optional[torch.Tensor] = None

    @torch.no_grad()
    def plan(self, score_fn: ScoreFn, action_low, action_high, horizon: int, proposals: Optional[torch.Tensor] = None) -> torch.Tensor:
        lo, hi = as_bounds(action_low, action_high, self.action_dim, self.device)
        props = check_proposals(proposals, horizon, self.action_dim, self.population, lo, hi)
        mu = shifted_mean(self._prev, horizon, lo, hi)
        half = (hi - lo) / 2
        adaptive = self.std_max is not None
        std = (torch.full_like(mu, self.std_max) if adaptive else torch.full_like(mu, self.sigma)) * half
        # temporal smoothing u_t = beta * eps_t + (1 - beta) * u_{t-1}, vectorised as a weighted cumsum
        t = torch.arange(horizon, device=self.device, dtype=torch.float32)
        w = torch.triu((1 - self.beta) ** (t.unsqueeze(0) - t.unsqueeze(1))) * self.beta  # [t_from, t_to]
        k = self.num_elites or self.population
        for _ in range(self.iterations):
            eps = torch.randn(self.population, horizon, self.action_dim, generator=self.generator, device=self.device) * std
            u = eps if self.beta == 1 else torch.einsum("nfa,ft->nta", eps, w)
            cand = with_proposals(torch.maximum(torch.minimum(mu + u, hi), lo), props)
            scores = safe_score(score_fn, cand)
            if k < cand.shape[0]:
                scores, idx = torch.topk(scores, k)
                cand = cand[idx]
            wts = torch.softmax(self.gamma * (scores - scores.max()), 0)
            mu = (wts[:, None, None] * cand).sum(0)
            if adaptive:
                var = (wts[:, None, None] * (cand - mu) ** 2).sum(0)
                std = torch.maximum(torch.minimum(var.sqrt(), self.std_max * half), self.std_min * half)
        self._prev = mu.clone()
        self.last_score = float(scores.max())
        self.last_std = std[0].clone()
        if self.sample_elite:
            return cand[int(torch.multinomial(wts, 1, generator=self.generator))].clone()
        return mu
