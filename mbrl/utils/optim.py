"""Optimisers with gradient clipping, shared by every algorithm (models, actors, critics).

`Optim(params, kind, lr, eps, clip, agc, warmup)`: Adam or LaProp; clipping by global norm (`clip`,
DreamerV3 paper v1: 1000 for the world model, 100 for actor and critic) or adaptive per-parameter
clipping (`agc`, the newer DreamerV3 reference); optional linear learning-rate warm-up.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from mbrl.errors import UserError

#: the keys of an optimiser config block (`wm_opt`, `fit.opt`, `actor_opt`, ...)
OPT_KEYS = ("kind", "lr", "eps", "clip", "agc", "warmup")


def adam(params, lr: float, **kw) -> torch.optim.Adam:
    """torch's Adam with its fused kernel (one pass over every parameter instead of ~10 element-wise
    ops per tensor: 320 -> 164 us per step for a 2 x 256 x 256 Q ensemble on one CPU thread, measured
    with torch 2.13); the same update rule as the default implementation, rounded differently. Used by the
    model-free learners (SAC, IQL, CQL, TD3+BC, BC); `Optim` (world models, actor-critic), the PETS terminal
    value, TD-MPC2 and DWM keep torch's default Adam, on which their seed-sensitive learning tests were measured."""
    return torch.optim.Adam(params, lr=lr, fused=True, **kw)


class LaProp(torch.optim.Optimizer):
    """LaProp (Ziyin et al. 2020): Adam with the momentum taken after normalisation; the newer
    DreamerV3 reference's optimiser (`opt: {momentum: True, beta1: 0.9, beta2: 0.999, eps: 1e-20}`)."""

    def __init__(self, params: Iterable, lr: float = 4e-5, betas=(0.9, 0.999), eps: float = 1e-20):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["v"] = torch.zeros_like(p)
                    st["m"] = torch.zeros_like(p)
                st["step"] += 1
                t = st["step"]
                st["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                vhat = st["v"] / (1 - b2**t)
                st["m"].mul_(b1).add_(p.grad / (vhat.sqrt() + group["eps"]), alpha=1 - b1)
                p.add_(st["m"], alpha=-group["lr"] / (1 - b1**t))


class Optim:
    """One optimiser with gradient clipping: `clip` (global norm, DreamerV3 paper v1: 1000 for the
    world model, 100 for actor and critic) or `agc` (adaptive per-parameter clipping relative to the
    parameter norm, newer reference `opt.agc: 0.3`)."""

    def __init__(self, params: Iterable[nn.Parameter], kind: str = "adam", lr: float = 1e-4, eps: float = 1e-8,
                 clip: float = 0.0, agc: float = 0.0, warmup: int = 0):
        self.params = [p for p in params if p.requires_grad]
        if kind == "adam":
            self.opt: torch.optim.Optimizer = torch.optim.Adam(self.params, lr=lr, eps=eps)
        elif kind == "laprop":
            self.opt = LaProp(self.params, lr=lr, eps=eps)
        else:
            raise UserError(f"unknown optimizer kind {kind!r}; valid: adam, laprop")
        self.lr, self.clip, self.agc, self.warmup = lr, clip, agc, warmup
        self.steps = 0

    def step(self, loss: torch.Tensor) -> float:
        """zero_grad, backward, clip, step; returns the gradient norm before clipping (nan when
        nothing clips: then it is not computed)."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in self.params if p.grad is not None]
        if self.clip <= 0 and self.agc <= 0 and not self.warmup:  # plain step: no norm to compute
            self.opt.step()
            self.steps += 1
            return float("nan")
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) if grads else torch.zeros(())
        if self.agc > 0:
            with torch.no_grad():
                for p in self.params:
                    if p.grad is None:
                        continue
                    pn = torch.linalg.vector_norm(p).clamp_min(1e-3)
                    gn = torch.linalg.vector_norm(p.grad).clamp_min(1e-12)
                    p.grad.mul_(torch.clamp(self.agc * pn / gn, max=1.0))
        elif self.clip > 0 and grads:
            torch._foreach_mul_(grads, torch.clamp(self.clip / (norm + 1e-6), max=1.0))
        if self.warmup:
            for g in self.opt.param_groups:
                g["lr"] = self.lr * min(1.0, (self.steps + 1) / self.warmup)
        self.opt.step()
        self.steps += 1
        return float(norm)

    def state_dict(self) -> dict:
        return {"opt": self.opt.state_dict(), "steps": self.steps}

    def load_state_dict(self, sd: dict) -> None:
        self.opt.load_state_dict(sd["opt"])
        self.steps = sd["steps"]


