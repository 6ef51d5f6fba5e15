"""Shared network pieces (MLPs, CNN encoders/decoders, norms). Add self-contained blocks here."""
from __future__ import annotations

from typing import Sequence, Type

import torch
from torch import nn


def mlp(
    in_dim: int,
    out_dim: int,
    hidden: int | Sequence[int] = 256,
    layers: int = 2,
    act: Type[nn.Module] = nn.ReLU,
    norm: bool = False,
    out_init_zero: bool = False,
) -> nn.Sequential:
    """`layers` hidden layers (Linear [+ LayerNorm] + act) then a Linear to `out_dim`.
    `hidden` may be one width or a list of widths (then `layers` is ignored)."""
    widths = list(hidden) if isinstance(hidden, Sequence) else [hidden] * layers
    mods: list[nn.Module] = []
    d = in_dim
    for w in widths:
        mods.append(nn.Linear(d, w))
        if norm:
            mods.append(nn.LayerNorm(w))
        mods.append(act())
        d = w
    out = nn.Linear(d, out_dim)
    if out_init_zero:
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
    mods.append(out)
    return nn.Sequential(*mods)


class EnsembleLinear(nn.Module):
    """`num_members` independent linear layers applied in one batched matmul.

    Input [E, B, in] (or [B, in], broadcast to every member) -> output [E, B, out].
    """

    def __init__(self, num_members: int, in_dim: int, out_dim: int):
        super().__init__()
        self.num_members, self.in_dim, self.out_dim = num_members, in_dim, out_dim
        self.weight = nn.Parameter(torch.empty(num_members, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(num_members, 1, out_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the same fan-in uniform init as nn.Linear, per member
        bound = 1.0 / self.in_dim**0.5
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.num_members, *x.shape)
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"num_members={self.num_members}, in_dim={self.in_dim}, out_dim={self.out_dim}"


def ensemble_mlp(
    num_members: int,
    in_dim: int,
    out_dim: int,
    hidden: int = 256,
    layers: int = 2,
    act: Type[nn.Module] = nn.ReLU,
    norm: bool = False,
) -> nn.Sequential:
    """`num_members` MLPs evaluated as one: [E, B, in] or [B, in] -> [E, B, out].
    LayerNorm (when `norm`) normalises each member's features independently."""
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers):
        mods.append(EnsembleLinear(num_members, d, hidden))
        if norm:
            mods.append(nn.LayerNorm(hidden, elementwise_affine=False))
        mods.append(act())
        d = hidden
    mods.append(EnsembleLinear(num_members, d, out_dim))
    return nn.Sequential(*mods)
