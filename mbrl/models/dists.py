"""Distributions and transforms shared by world models and learners.

symlog / symexp (DreamerV3 eq. 1), two-hot categorical regression over fixed bins (DreamerV3
"symexp twohot" heads), straight-through one-hot categoricals with uniform mixing (DreamerV3
"unimix" latents and discrete policies), the bounded normal used by DreamerV3's continuous policy,
a truncated normal, and the KL between categorical latents with free bits.
Everything here is plain batched tensor code; nothing is specific to one backbone.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F


def symlog(x: torch.Tensor) -> torch.Tensor:
    """sign(x) * log(1 + |x|) (DreamerV3 eq. 1)."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: torch.Tensor) -> torch.Tensor:
    """Inverse of symlog: sign(x) * (exp(|x|) - 1)."""
    return torch.sign(x) * torch.expm1(torch.abs(x))


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Forward value of `hard`, gradient of `soft`."""
    return soft + (hard - soft).detach()


# ----------------------------------------------------------------------------------------------
# two-hot regression


def symexp_bins(num_bins: int = 255, low: float = -20.0, high: float = 20.0) -> torch.Tensor:
    """DreamerV3's bins: symexp of `num_bins` points evenly spaced in [low, high]
    (reference configs.yaml `rewhead/value: output: symexp_twohot, bins: 255`)."""
    b = symexp(torch.linspace(low, high, num_bins, dtype=torch.float64))
    if low == -high:  # exactly symmetric around an exact 0
        b = 0.5 * (b - b.flip(0))
    return b.float()


def twohot(x: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Two-hot encoding of `x` [...] over sorted `bins` [K] -> [..., K]; values outside the range
    go entirely to the first / last bin. Weights are linear in the distance to the two neighbours,
    so `(twohot(x, bins) * bins).sum(-1) == x` inside the range."""
    x = x.to(bins.dtype)
    k = bins.shape[0]
    above = torch.searchsorted(bins, x.detach().contiguous(), right=True).clamp(1, k - 1)
    below = above - 1
    b_lo, b_hi = bins[below], bins[above]
    w_hi = ((x - b_lo) / (b_hi - b_lo)).clamp(0.0, 1.0)
    w_lo = 1.0 - w_hi
    out = torch.zeros(*x.shape, k, dtype=bins.dtype, device=x.device)
    out.scatter_(-1, below.unsqueeze(-1), w_lo.unsqueeze(-1))
    out.scatter_add_(-1, above.unsqueeze(-1), w_hi.unsqueeze(-1))
    return out


class TwoHot:
    """Categorical over fixed bins, trained with two-hot targets; `mean()` is the expected bin.

    `transform` / `inverse` allow the DreamerV3-v1 variant (two-hot of symlog(x) over linear bins,
    then symexp of the mean); the default (identity over symexp-spaced bins) is the reference's
    `symexp_twohot`.
    """

    def __init__(self, logits: torch.Tensor, bins: torch.Tensor,
                 transform: Optional[Callable] = None, inverse: Optional[Callable] = None):
        self.logits = logits.float()
        self.bins = bins
        self.transform = transform or (lambda v: v)
        self.inverse = inverse or (lambda v: v)

    def mean(self) -> torch.Tensor:
        probs = torch.softmax(self.logits, -1)
        # symmetric summation (as the reference does) so that uniform probabilities over
        # symmetric bins give exactly 0 at initialisation
        k = self.bins.shape[0]
        m = k // 2
        if k % 2 == 1:
            mid = probs[..., m] * self.bins[m]
            lo = (probs[..., :m] * self.bins[:m]).flip(-1)
            hi = probs[..., m + 1:] * self.bins[m + 1:]
            wavg = mid + (lo + hi).sum(-1)
        else:
            lo = (probs[..., :m] * self.bins[:m]).flip(-1)
            hi = probs[..., m:] * self.bins[m:]
            wavg = (lo + hi).sum(-1)
        return self.inverse(wavg)

    def log_prob(self, target: torch.Tensor) -> torch.Tensor:
        tgt = twohot(self.transform(target.detach().float()), self.bins)
        return (tgt * torch.log_softmax(self.logits, -1)).sum(-1)

    def loss(self, target: torch.Tensor) -> torch.Tensor:
        return -self.log_prob(target)


# ----------------------------------------------------------------------------------------------
# categoricals


def unimix_logits(logits: torch.Tensor, unimix: float) -> torch.Tensor:
    """Logits of (1 - unimix) * softmax(logits) + unimix / K (DreamerV3 sec. "Robust predictions")."""
    if unimix <= 0:
        return logits
    probs = torch.softmax(logits.float(), -1)
    probs = (1 - unimix) * probs + unimix / logits.shape[-1]
    return torch.log(probs)


class OneHotCategorical:
    """Categorical over the last dim whose samples are one-hot with straight-through gradients.
    `logits` are used as given (apply `unimix_logits` first for the 1% uniform mix)."""

    def __init__(self, logits: torch.Tensor):
        self.logits = torch.log_softmax(logits.float(), -1)

    @property
    def probs(self) -> torch.Tensor:
        return self.logits.exp()

    def sample(self) -> torch.Tensor:
        """One-hot sample; gradient flows to the probabilities (straight-through)."""
        probs = self.probs
        idx = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1).reshape(probs.shape[:-1])
        hard = F.one_hot(idx, probs.shape[-1]).to(probs.dtype)
        return straight_through(hard, probs)

    def mode(self) -> torch.Tensor:
        probs = self.probs
        hard = F.one_hot(probs.argmax(-1), probs.shape[-1]).to(probs.dtype)
        return straight_through(hard, probs)

    def log_prob(self, onehot: torch.Tensor) -> torch.Tensor:
        return (onehot * self.logits).sum(-1)

    def entropy(self) -> torch.Tensor:
        return -(self.probs * self.logits).sum(-1)


def categorical_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) between categoricals over the last dim, given (unnormalised) logits."""
    lp = torch.log_softmax(logits_p.float(), -1)
    lq = torch.log_softmax(logits_q.float(), -1)
    return (lp.exp() * (lp - lq)).sum(-1)


def kl_free_bits(kl: torch.Tensor, free: float) -> torch.Tensor:
    """max(free, kl) elementwise (DreamerV3 free bits, clipped below `free` nats; the gradient is
    zero where the KL is already below the threshold)."""
    return torch.clamp(kl, min=free) if free > 0 else kl


# ----------------------------------------------------------------------------------------------
# continuous


def soft_clamp_logvar(logvar: torch.Tensor, min_logvar: torch.Tensor, max_logvar: torch.Tensor) -> torch.Tensor:
    """Log-variance softly kept between learned bounds (PETS / mbrl-lib): max - softplus(max - x),
    then min + softplus(x - min)."""
    logvar = max_logvar - F.softplus(max_logvar - logvar)
    return min_logvar + F.softplus(logvar - min_logvar)


class BoundedNormal:
    """DreamerV3 continuous policy: Normal(tanh(mean), std) with
    std = (maxstd - minstd) * sigmoid(x + 2) + minstd (reference `policy_dist_cont: bounded_normal`,
    `minstd: 0.1, maxstd: 1.0`). Samples are clipped to [-1, 1] with a straight-through gradient."""

    def __init__(self, mean: torch.Tensor, std_param: torch.Tensor, minstd: float = 0.1, maxstd: float = 1.0):
        self.loc = torch.tanh(mean.float())
        self.scale = (maxstd - minstd) * torch.sigmoid(std_param.float() + 2.0) + minstd

    def rsample(self) -> torch.Tensor:
        x = self.loc + self.scale * torch.randn_like(self.loc)
        return straight_through(x.clamp(-1.0, 1.0), x)

    def mode(self) -> torch.Tensor:
        return self.loc

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.loc) / self.scale
        return (-0.5 * z * z - torch.log(self.scale) - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self) -> torch.Tensor:
        return (0.5 + 0.5 * math.log(2 * math.pi) + torch.log(self.scale)).sum(-1)


class TruncatedNormal:
    """Normal(loc, scale) truncated to [low, high], sampled by inverse CDF (reparameterised)."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, low: float = -1.0, high: float = 1.0, eps: float = 1e-6):
        self.loc, self.scale, self.low, self.high, self.eps = loc, scale, low, high, eps
        self._a = (low - loc) / scale
        self._b = (high - loc) / scale
        self._Fa = _ndtr(self._a)
        self._Fb = _ndtr(self._b)
        self._Z = (self._Fb - self._Fa).clamp_min(1e-12)

    def rsample(self) -> torch.Tensor:
        u = torch.rand_like(self.loc).clamp(self.eps, 1 - self.eps)
        p = self._Fa + u * self._Z
        z = math.sqrt(2.0) * torch.erfinv((2 * p - 1).clamp(-1 + self.eps, 1 - self.eps))
        return (self.loc + self.scale * z).clamp(self.low, self.high)

    def mode(self) -> torch.Tensor:
        return self.loc.clamp(self.low, self.high)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.loc) / self.scale
        lp = -0.5 * z * z - 0.5 * math.log(2 * math.pi) - torch.log(self.scale) - torch.log(self._Z)
        return lp.sum(-1)

    def entropy(self) -> torch.Tensor:
        phi = lambda t: torch.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)  # noqa: E731
        a, b = self._a, self._b
        ent = 0.5 * math.log(2 * math.pi * math.e) + torch.log(self.scale * self._Z) + (a * phi(a) - b * phi(b)) / (2 * self._Z)
        return ent.sum(-1)


def _ndtr(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2.0)))
