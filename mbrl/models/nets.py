"""Shared network pieces (MLPs, CNN encoders/decoders, norms). Add self-contained blocks here."""
from __future__ import annotations

from typing import Optional, Sequence, Type

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


# ------------------------------------------------------------------------------------------------
# DreamerV3-style blocks (used by models/parts.py and models/rssm.py; general enough for other pixel backbones)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel dim of [N, C, H, W] maps (DreamerV3 normalises conv features
    per pixel over channels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def norm_act_linear(in_dim: int, out_dim: int, act: Type[nn.Module] = nn.SiLU, bias: bool = False) -> nn.Sequential:
    """Linear -> LayerNorm -> act (DreamerV3's dense unit; the norm makes the bias redundant)."""
    return nn.Sequential(nn.Linear(in_dim, out_dim, bias=bias), nn.LayerNorm(out_dim, eps=1e-3), act())


def dreamer_mlp(in_dim: int, out_dim: Optional[int], units: int, layers: int, act: Type[nn.Module] = nn.SiLU,
                out_scale: float = 1.0) -> nn.Sequential:
    """`layers` x (Linear, LayerNorm, act) then an optional Linear head to `out_dim`.
    `out_scale=0` zero-initialises the head (DreamerV3 reward / value heads, `outscale: 0.0`)."""
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers):
        mods.append(norm_act_linear(d, units, act))
        d = units
    if out_dim is not None:
        head = nn.Linear(d, out_dim)
        scale_init_(head, out_scale)
        mods.append(head)
    return nn.Sequential(*mods)


def scale_init_(layer: nn.Module, scale: float) -> None:
    """Rescale a layer's initial weights (0 -> zeros); biases start at zero."""
    with torch.no_grad():
        if scale == 0.0:
            layer.weight.zero_()
        elif scale != 1.0:
            layer.weight.mul_(scale)
        if getattr(layer, "bias", None) is not None:
            layer.bias.zero_()


class BlockLinear(nn.Module):
    """Block-diagonal linear map: the input's last dim is split into `blocks` groups, each mapped
    by its own weight ([..., blocks*in_g] -> [..., blocks*out_g]); one batched matmul."""

    def __init__(self, in_dim: int, out_dim: int, blocks: int, bias: bool = True):
        super().__init__()
        if in_dim % blocks or out_dim % blocks:
            raise ValueError(f"BlockLinear: in_dim {in_dim} and out_dim {out_dim} must be divisible by blocks={blocks}")
        self.blocks, self.in_g, self.out_g = blocks, in_dim // blocks, out_dim // blocks
        self.weight = nn.Parameter(torch.empty(blocks, self.in_g, self.out_g))
        self.bias = nn.Parameter(torch.zeros(out_dim)) if bias else None
        bound = 1.0 / self.in_g**0.5
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        xg = x.reshape(-1, self.blocks, self.in_g).transpose(0, 1)  # [G, N, in_g]
        y = torch.bmm(xg, self.weight).transpose(0, 1).reshape(*lead, self.blocks * self.out_g)
        return y + self.bias if self.bias is not None else y


class ConvEncoder(nn.Module):
    """DreamerV3 pixel encoder: 64x64 (or any 2^k with k >= 2 more than the stages) images, 4 stages
    of Conv(k=4, s=2, p=1) -> channel LayerNorm -> SiLU with depth, 2, 4, 8 x depth channels;
    uint8 inputs are mapped to [-0.5, 0.5]. Input [N, C, H, W] -> [N, out_dim]."""

    def __init__(self, in_channels: int, depth: int = 32, stages: int = 4, image_size: int = 64, act: Type[nn.Module] = nn.SiLU):
        super().__init__()
        if image_size % (2**stages):
            raise ValueError(f"ConvEncoder: image size {image_size} must be divisible by 2**stages={2**stages}")
        mods: list[nn.Module] = []
        c = in_channels
        for i in range(stages):
            out = depth * 2**i
            mods += [nn.Conv2d(c, out, 4, 2, 1, bias=False), ChannelLayerNorm(out, eps=1e-3), act()]
            c = out
        self.net = nn.Sequential(*mods)
        self.final_size = image_size // 2**stages
        self.out_channels = c
        self.out_dim = c * self.final_size**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255.0 - 0.5
        return self.net(x).flatten(1)


class ConvDecoder(nn.Module):
    """Mirror of ConvEncoder: Linear to [8 depth, 4, 4], 4 ConvTranspose(k=4, s=2, p=1) stages
    (LayerNorm + SiLU except the last). Output [N, C, H, W] in the encoder's [-0.5, 0.5] scale."""

    def __init__(self, in_dim: int, out_channels: int, depth: int = 32, stages: int = 4, image_size: int = 64, act: Type[nn.Module] = nn.SiLU):
        super().__init__()
        self.final_size = image_size // 2**stages
        self.c0 = depth * 2 ** (stages - 1)
        self.linear = nn.Linear(in_dim, self.c0 * self.final_size**2)
        mods: list[nn.Module] = []
        c = self.c0
        for i in range(stages - 1, -1, -1):
            last = i == 0
            out = out_channels if last else depth * 2 ** (i - 1)
            mods.append(nn.ConvTranspose2d(c, out, 4, 2, 1, bias=last))
            if not last:
                mods += [ChannelLayerNorm(out, eps=1e-3), act()]
            c = out
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear(x).reshape(-1, self.c0, self.final_size, self.final_size)
        return self.net(h)
