"""iCEM (Pinneri et al. 2020, "Sample-efficient Cross-Entropy Method for Real-time Planning").

On top of CEM: temporally correlated (colored, power spectrum 1/f^beta) sampling noise, a
population that shrinks by `population_decay` each iteration, a fraction `keep_elites` of the
elites carried into the next iteration (and, shifted by one step, into the next `plan` call),
the mean added as a candidate in the last iteration, shift-initialisation of the mean, and the
best sequence seen being executed.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from mbrl.planners.base import Planner, ScoreFn
from mbrl.planners.common import as_bounds, check_proposals, safe_score, shifted_mean, with_proposals
from mbrl.errors import UserError


def colored_noise(beta: float, shape: tuple[int, int, int], generator: Optional[torch.Generator] = None, device="cpu") -> torch.Tensor:
    """Unit-variance Gaussian noise [N, H, A] with power spectrum ∝ 1/f^beta along the time axis H
    (beta=0: white; beta=1: pink; beta=2: red / Brownian-like)."""
    n, h, a = shape
    if beta == 0 or h < 2:
        return torch.randn(shape, generator=generator, device=device)
    freqs = torch.fft.rfftfreq(h, device=device)
    freqs[0] = 1.0 / h  # fmin: the lowest resolvable frequency
    s = freqs ** (-beta / 2.0)  # amplitude scale per frequency [F]
    nf = s.shape[0]
    re = torch.randn(n, a, nf, generator=generator, device=device)
    im = torch.randn(n, a, nf, generator=generator, device=device)
    im[..., 0] = 0.0
    re[..., 0] *= math.sqrt(2.0)
    c = torch.full((nf,), 4.0, device=device)  # variance weight of each frequency in the output
    c[0] = 2.0
    if h % 2 == 0:
        im[..., -1] = 0.0
        re[..., -1] *= math.sqrt(2.0)
        c[-1] = 2.0
    spec = torch.complex(re * s, im * s)
    y = torch.fft.irfft(spec, n=h, dim=-1)  # [N, A, H]
    sigma = torch.sqrt((c * s**2).sum()) / h
    return (y / sigma).transpose(1, 2).contiguous()


class ICEM(Planner):
    def __init__(
        self,
        action_dim: int,
        population: int = 300,
        iterations: int = 3,
        num_elites: int = 10,
        noise_beta: float = 2.0,
        population_decay: float = 1.25,
        keep_elites: float = 0.3,
        alpha: float = 0.1,
        init_std: float = 0.5,
        add_mean: bool = True,
        device="cpu",
        seed: Optional[int] = None,
    ):
        super().__init__(action_dim, device, seed)
        if population < 2 or iterations < 1 or not 1 <= num_elites <= population or population_decay < 1 or not 0 <= keep_elites <= 1:
            raise UserError(
                f"need population >= 2, iterations >= 1, 1 <= num_elites <= population, population_decay >= 1, 0 <= keep_elites <= 1; "
                f"got {population}, {iterations}, {num_elites}, {population_decay}, {keep_elites}"
            )
        self.population, self.iterations, self.num_elites = population, iterations, num_elites
        self.noise_beta, self.population_decay, self.keep_elites = noise_beta, population_decay, keep_elites
        self.alpha, self.init_std, self.add_mean = alpha, init_std, add_mean
        self._elites: Optional[torch.Tensor] = None

    def reset(self) -> None:
        super().reset()
        self._elites = None

    @torch.no_grad()
    def plan(self, score_fn: ScoreFn, action_low, action_high, horizon: int, proposals: Optional[torch.Tensor] = None) -> torch.Tensor:
        lo, hi = as_bounds(action_low, action_high, self.action_dim, self.device)
        props = check_proposals(proposals, horizon, self.action_dim, self.population, lo, hi)
        mu = shifted_mean(self._prev, horizon, lo, hi)
        std = torch.full_like(mu, self.init_std) * (hi - lo) / 2
        n_keep = int(round(self.keep_elites * self.num_elites))
        kept: Optional[torch.Tensor] = None
        if self._elites is not None and n_keep > 0 and self._elites.shape[1] >= 1:
            # shift last call's elites by one step; the new last step is a random action
            e = self._elites[:n_keep]
            last = lo + (hi - lo) * torch.rand(e.shape[0], 1, self.action_dim, generator=self.generator, device=self.device)
            e = torch.cat([e[:, 1:], last], 1)
            kept = e[:, :horizon] if e.shape[1] >= horizon else torch.cat([e, e[:, -1:].expand(-1, horizon - e.shape[1], -1)], 1)
        best, best_score = mu.clone(), -float("inf")
        elites = None
        for i in range(self.iterations):
            n = max(int(self.population * self.population_decay ** (-i)), 2 * self.num_elites)
            cand = mu + std * colored_noise(self.noise_beta, (n, horizon, self.action_dim), self.generator, self.device)
            parts = [torch.maximum(torch.minimum(cand, hi), lo)]
            if props is not None:  # the policy's proposals join every iteration's samples
                parts.append(props)
            if kept is not None:
                parts.append(kept)
            if self.add_mean and i == self.iterations - 1:
                parts.append(mu.clamp(lo, hi).unsqueeze(0))
            cand = torch.cat(parts, 0) if len(parts) > 1 else parts[0]
            scores = safe_score(score_fn, cand)
            k = min(self.num_elites, cand.shape[0])
            top, idx = torch.topk(scores, k)
            elites = cand[idx]
            mu = self.alpha * mu + (1 - self.alpha) * elites.mean(0)
            std = self.alpha * std + (1 - self.alpha) * elites.std(0, unbiased=False)
            kept = elites[:n_keep] if n_keep > 0 else None
            if float(top[0]) > best_score:
                best_score, best = float(top[0]), elites[0].clone()
        self._elites = elites
        self._prev = mu.clone()  # shift-initialisation of the mean
        self.last_score = best_score
        return best
