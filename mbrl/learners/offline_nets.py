"""Pieces shared by the offline learners (IQL, CQL, TD3+BC, BC): observation normaliser, deterministic
actor, pessimistic aggregation of a Q ensemble, Polyak update. (Q ensembles and the tanh-Gaussian actor
are the ones of `mbrl.learners.sac`.)"""
from __future__ import annotations

import torch

from mbrl.errors import UserError
from torch import nn

from mbrl.models.nets import mlp


class Normalizer(nn.Module):
    """(x - mean) / std with fixed statistics (from the dataset); identity when none are given."""

    def __init__(self, dim: int, mean=None, std=None, eps: float = 1e-3):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim) if mean is None else torch.as_tensor(mean, dtype=torch.float32).reshape(dim))
        s = torch.ones(dim) if std is None else torch.as_tensor(std, dtype=torch.float32).reshape(dim)
        self.register_buffer("std", s.clamp_min(eps))

    def set(self, mean, std) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32).reshape(self.mean.shape))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32).reshape(self.std.shape).clamp_min(1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class DeterministicActor(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, layers: int = 2):
        super().__init__()
        self.net = mlp(obs_dim, act_dim, hidden, layers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))


def aggregate_q(q: torch.Tensor, how: str = "min", beta: float = 1.0) -> torch.Tensor:
    """Pessimistic value from an ensemble [N, ...]: `min` or `lcb` (mean - beta * std) or `mean`."""
    if how == "min":
        return q.min(0).values
    if how == "lcb":
        return q.mean(0) - beta * q.std(0)
    if how == "mean":
        return q.mean(0)
    raise UserError(f"unknown Q aggregation q_agg={how!r}; valid: min, lcb, mean")


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)
