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
