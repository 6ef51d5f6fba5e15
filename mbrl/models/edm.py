"""EDM diffusion machinery (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models", arXiv:2206.00364), shared by the DIAMOND backbone (mbrl/models/diffusion.py) and
DWM's trajectory diffusion (mbrl/algos/dwm.py). It holds no network: a denoiser is any callable
`net(c_in * x_noisy, c_noise, *cond) -> F` and this module wraps it as

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))

with the preconditioning of EDM table 1 (and DIAMOND's `Denoiser.compute_conditioners`, reference
github.com/eloialonso/diamond `src/models/diffusion/denoiser.py`):
    c_in = 1 / sqrt(sigma^2 + sigma_data^2)     c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)
    c_out = sigma * sigma_data / sqrt(sigma^2 + sigma_data^2)     c_noise = ln(sigma) / 4
where, with offset noise of scale s_o (DIAMOND `sigma_offset_noise: 0.3`), the effective noise level
sqrt(sigma^2 + s_o^2) enters the conditioners. Training draws ln(sigma) ~ N(loc, scale^2) clipped to
[sigma_min, sigma_max] (DIAMOND `sigma_distribution: loc -0.4, scale 1.2, 2e-3 .. 20`; EDM's
P_mean -1.2, P_std 1.2) and regresses F onto (x0 - c_skip x) / c_out (the EDM loss with its weight
lambda(sigma) = 1 / c_out^2 folded in). Sampling follows the Karras schedule
    sigma_i = (s_max^(1/rho) + i / (N - 1) (s_min^(1/rho) - s_max^(1/rho)))^rho,  sigma_N = 0
(EDM eq. 5, rho = 7; DIAMOND's sampler: N = 3 steps, s_min 2e-3, s_max 5) with Euler steps, or
Heun's 2nd-order correction (EDM algorithm 1) except into sigma = 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from mbrl.errors import UserError

SAMPLERS = ("euler", "heun")


def karras_sigmas(steps: int, sigma_min: float = 2e-3, sigma_max: float = 5.0, rho: float = 7.0,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """The `steps` noise levels of EDM eq. 5 followed by a final 0: [steps + 1]."""
    if steps < 1:
        raise UserError(f"diffusion sampler steps={steps}; valid: an integer >= 1 (DIAMOND uses 3)")
    ramp = torch.linspace(0, 1, steps, device=device, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sig = (hi + ramp * (lo - hi)) ** rho
    if steps == 1:  # linspace(0, 1, 1) is [0]: the single level is sigma_max
        sig = torch.tensor([sigma_max], device=device, dtype=torch.float64)
    return torch.cat([sig, sig.new_zeros(1)]).float()


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-row [N] tensor shaped to broadcast over `like` [N, ...]."""
    return v.reshape(v.shape + (1,) * (like.dim() - v.dim()))


@dataclass
class Conditioners:
    c_in: torch.Tensor
    c_skip: torch.Tensor
    c_out: torch.Tensor
    c_noise: torch.Tensor  # [N] (the network's noise input)


class EDM(nn.Module):
    """Preconditioning, training loss and sampler around a denoiser network (no parameters)."""

    def __init__(self, sigma_data: float = 0.5, offset_noise: float = 0.0, train_loc: float = -0.4, train_scale: float = 1.2,
                 train_min: float = 2e-3, train_max: float = 20.0, sigma_min: float = 2e-3, sigma_max: float = 5.0,
                 rho: float = 7.0, steps: int = 3, sampler: str = "euler", clip: Optional[float] = None):
        super().__init__()
        if sampler not in SAMPLERS:
            raise UserError(f"diffusion sampler={sampler!r}; valid: {', '.join(SAMPLERS)}")
        if sigma_data <= 0 or offset_noise < 0 or not 0 < sigma_min < sigma_max or train_scale < 0:
            raise UserError(f"diffusion noise levels sigma_data={sigma_data}, offset_noise={offset_noise}, sigma_min={sigma_min}, "
                            f"sigma_max={sigma_max}; valid: sigma_data > 0, offset_noise >= 0, 0 < sigma_min < sigma_max")
        self.sigma_data, self.offset_noise = float(sigma_data), float(offset_noise)
        self.train_loc, self.train_scale, self.train_min, self.train_max = float(train_loc), float(train_scale), float(train_min), float(train_max)
        self.sigma_min, self.sigma_max, self.rho = float(sigma_min), float(sigma_max), float(rho)
        self.steps, self.sampler, self.clip = int(steps), sampler, clip
        karras_sigmas(self.steps)  # validates steps

    # ------------------------------------------------------------------ preconditioning
    def conditioners(self, sigma: torch.Tensor) -> Conditioners:
        s = (sigma.float() ** 2 + self.offset_noise**2).sqrt()
        sd2 = self.sigma_data**2
        c_in = 1 / (s**2 + sd2).sqrt()
        c_skip = sd2 / (s**2 + sd2)
        c_out = s * self.sigma_data / (s**2 + sd2).sqrt()
        return Conditioners(c_in, c_skip, c_out, s.log() / 4)

    def denoise(self, net: Callable, x: torch.Tensor, sigma: torch.Tensor, *cond) -> torch.Tensor:
        """D(x; sigma) for rows of x [N, ...] at noise levels sigma [N] (clamped to +-clip if set)."""
        cs = self.conditioners(sigma)
        f = net(x * _bcast(cs.c_in, x), cs.c_noise, *cond).float()
        d = _bcast(cs.c_skip, x) * x + _bcast(cs.c_out, x) * f
        return d.clamp(-self.clip, self.clip) if self.clip is not None else d

    # ------------------------------------------------------------------ training
    def sample_sigma(self, n: int, device) -> torch.Tensor:
        return (torch.randn(n, device=device) * self.train_scale + self.train_loc).exp().clamp(self.train_min, self.train_max)

    def loss(self, net: Callable, x0: torch.Tensor, *cond, sigma: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-row EDM loss [N] of clean targets x0 [N, ...]: mean squared error of F against
        (x0 - c_skip x) / c_out at log-normal noise levels. Offset noise is one draw per row and per
        channel (dim 1), constant over the remaining dims (DIAMOND `apply_noise`)."""
        n = x0.shape[0]
        x0 = x0.float()
        if sigma is None:
            sigma = self.sample_sigma(n, x0.device)
        noisy = x0 + torch.randn_like(x0) * _bcast(sigma, x0)
        if self.offset_noise > 0:
            off_shape = x0.shape[:2] + (1,) * (x0.dim() - 2)
            noisy = noisy + self.offset_noise * torch.randn(off_shape, device=x0.device)
        cs = self.conditioners(sigma)
        f = net(noisy * _bcast(cs.c_in, noisy), cs.c_noise, *cond).float()
        target = (x0 - _bcast(cs.c_skip, noisy) * noisy) / _bcast(cs.c_out, noisy)
        return (f - target).square().reshape(n, -1).mean(-1)

    # ------------------------------------------------------------------ sampling
    def sigmas(self, steps: Optional[int] = None, device=None) -> torch.Tensor:
        return karras_sigmas(self.steps if steps is None else int(steps), self.sigma_min, self.sigma_max, self.rho, device)

    @torch.no_grad()
    def sample(self, net: Callable, shape: tuple, *cond, steps: Optional[int] = None, sampler: Optional[str] = None,
               device=None, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Samples [shape] by integrating the probability-flow ODE from x ~ N(0, sigma_max^2) (EDM
        algorithm 1 without churn) over the Karras levels; `steps` network evaluations with Euler,
        2 * steps - 1 with Heun."""
        sampler = sampler or self.sampler
        if sampler not in SAMPLERS:
            raise UserError(f"diffusion sampler={sampler!r}; valid: {', '.join(SAMPLERS)}")
        sig = self.sigmas(steps, device).tolist()
        x = (noise if noise is not None else torch.randn(shape, device=device)) * sig[0]
        n = x.shape[0]
        for s, s_next in zip(sig[:-1], sig[1:]):
            sv = x.new_full((n,), s)
            d = (x - self.denoise(net, x, sv, *cond)) / s
            x_next = x + (s_next - s) * d
            if sampler == "heun" and s_next > 0:
                d2 = (x_next - self.denoise(net, x_next, x.new_full((n,), s_next), *cond)) / s_next
                x_next = x + (s_next - s) * 0.5 * (d + d2)
            x = x_next
        return x


class FourierFeatures(nn.Module):
    """Random Fourier features of a scalar noise input [N] -> [N, dim] (cos, sin), a fixed buffer of
    frequencies ~ N(0, 1) (DIAMOND `FourierFeatures`; EDM's noise embedding)."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise UserError(f"diffusion cond size {dim}; valid: an even number")
        self.register_buffer("freq", torch.randn(dim // 2))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        f = 2 * math.pi * c.float().reshape(-1, 1) * self.freq
        return torch.cat([f.cos(), f.sin()], -1)


class AdaNorm(nn.Module):
    """Adaptive normalisation: a parameter-free GroupNorm (images [N, C, H, W], `groups` groups) or
    LayerNorm (vectors [N, C]) followed by x * (1 + scale) + shift from a linear map of the
    conditioning vector [N, cond] (DIAMOND `AdaGroupNorm`)."""

    def __init__(self, channels: int, cond: int, groups: int = 0):
        super().__init__()
        self.channels, self.groups = int(channels), int(groups)
        self.linear = nn.Linear(cond, 2 * channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.groups:
            x = nn.functional.group_norm(x, self.groups, eps=1e-5)
        else:
            x = nn.functional.layer_norm(x, (self.channels,), eps=1e-5)
        scale, shift = self.linear(cond).chunk(2, -1)
        shape = (x.shape[0], self.channels) + (1,) * (x.dim() - 2)
        return x * (1 + scale.reshape(shape)) + shift.reshape(shape)


class AdaResMLP(nn.Module):
    """A residual MLP denoiser body for vectors: in -> width, `blocks` x [AdaNorm, SiLU, Linear,
    AdaNorm, SiLU, Linear (zero-init)] + skip, then AdaNorm, SiLU, zero-init Linear -> out. The noise
    level and any conditioning reach every block through AdaNorm. Used by DIAMOND's vector denoiser
    and DWM's segment denoiser."""

    def __init__(self, in_dim: int, out_dim: int, width: int, blocks: int, cond: int):
        super().__init__()
        self.inp = nn.Linear(in_dim, width)
        self.n1 = nn.ModuleList(AdaNorm(width, cond) for _ in range(blocks))
        self.l1 = nn.ModuleList(nn.Linear(width, width) for _ in range(blocks))
        self.n2 = nn.ModuleList(AdaNorm(width, cond) for _ in range(blocks))
        self.l2 = nn.ModuleList(nn.Linear(width, width) for _ in range(blocks))
        for lin in self.l2:
            nn.init.zeros_(lin.weight)
        self.n_out = AdaNorm(width, cond)
        self.out = nn.Linear(width, out_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        act = nn.functional.silu
        h = self.inp(x)
        for n1, l1, n2, l2 in zip(self.n1, self.l1, self.n2, self.l2):
            h = h + l2(act(n2(l1(act(n1(h, cond))), cond)))
        return self.out(act(self.n_out(h, cond)))
