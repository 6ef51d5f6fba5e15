"""Mamba-2 (SSD) world model in the style of Drama (Wang et al., ICLR 2025, arXiv:2410.08893; reference code
github.com/realwenlongwang/drama, `sub_models/world_models.py` and its vendored `mamba_ssm`).

The model (each point cites the reference):
- decoupled posterior: z_t ~ Cat(post(enc(o_t))) from the observation alone (`DistHead.forward_post`),
  `stoch` x `classes` one-hot latents with 1% unimix (the shared `CategoricalLatent`).
- sequence core over tokens (z_t, a_t): stem Linear -> RMSNorm -> SiLU (`MixerModel.stem`), then `n_layer`
  pre-norm residual Mamba-2 blocks (`Block`: x + Mamba2(RMSNorm(x)), no MLP, `d_intermediate: 0`) and a
  final RMSNorm (`norm_f`). Its output h_t predicts the prior of z_{t+1} (`DistHead.forward_prior`).
- Mamba-2 mixer (Dao & Gu 2024, "Transformers are SSMs", arXiv:2405.21060; `mamba_ssm/modules/mamba2.py`):
  in_proj -> [z, xBC, dt]; depthwise causal conv (width `d_conv` 4) + SiLU over xBC; dt = softplus(dt +
  dt_bias); scalar-per-head A = -exp(A_log); the SSD recurrence S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T,
  y_t = S_t C_t + D x_t; gated RMSNorm y * silu(z) (`norm_before_gate=False`); out_proj. Init as the
  reference: A ~ U(1, 16), dt log-uniform in [1e-3, 1e-1] (dt_bias = softplus^-1), D = 1, out_proj scaled
  by 1/sqrt(n_layer), Linear biases zero. Drama: `n_layer: 2`, `HiddenStateDim: 512`, `d_state: 16`
  (size S here); headdim 64, expand 2, one B/C group (the Mamba2 defaults).
- loss (`WorldModel.update`): reconstruction (decoder from z alone) + two-hot reward + Bernoulli continue +
  1.0 * dyn + 0.1 * rep KL with 1 free nat (Drama's weights).

Training runs the **chunked SSD algorithm** (paper sec. 6, `ssd_minimal.py` listing 1) in pure PyTorch:
block matmuls inside chunks of `chunk` steps and a scan over chunk states; any length (padded inside). The
diagonal blocks use the factorised decay (see `ssd_chunked`): one GEMM per chunk over all heads.
Episode starts (`is_first`) inside a sequence reset the SSM state and the conv window: every
contribution from token s to step l is masked unless no reset lies in (s, l] (the `seq_idx` semantics
of the fused kernels). Imagination and acting use the recurrent form: O(1) per step, the state is each
layer's SSM state [H, P, N] and conv window [conv_dim, d_conv - 1], kept in `MambaState` (flattened),
so particles, indexing and `imagine` work as for any backbone.

`kernel=auto` uses the fused `mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined` where
`mamba_ssm` is installed and the tensors are on CUDA (same math; it has no CPU path), `kernel=torch` (the
default) always the portable path, `kernel=mamba_ssm` insists on the fused kernel.

State layout at sequence index t: `deter` = h_{t-1} (the core's output after the tokens before t; zeros
at an episode start), `stoch` = z_t, and the recurrent state after those tokens; `step(s_t, a_t)`
consumes the token (z_t, a_t). Features (actor, critic, reward and continue heads) are [h_{t-1}, z_t],
Drama's agent input `cat(sample, dist_feat)`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import nn

from mbrl.data.batch import Batch
from mbrl.errors import UserError
from mbrl.models import register
from mbrl.models.base import State, WorldModel
from mbrl.models.nets import dreamer_mlp
from mbrl.models.parts import CategoricalLatent, ContinueHead, ObsDecoder, ObsEncoder, RewardHead, action_spec, episode_tokens, latent_model_loss

try:  # fused CUDA kernels (optional; not installable without CUDA)
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined as _fused_scan
except Exception:  # noqa: BLE001 - any import failure means "not available"
    _fused_scan = None

SIZES: dict[str, dict[str, int]] = {
    # S is Drama's world model (config_files/train.yaml: HiddenStateDim 512, Mamba n_layer 2, d_state 16)
    "XS": dict(d_model=256, n_layer=2, d_state=16, hidden=256, layers=1, depth=16),
    "S": dict(d_model=512, n_layer=2, d_state=16, hidden=256, layers=2, depth=32),
    "M": dict(d_model=768, n_layer=4, d_state=32, hidden=512, layers=3, depth=48),
}
KERNELS = ("torch", "auto", "mamba_ssm")


# ---------------------------------------------------------------------------------------------- SSD
# Largest decay inside one chunk (-(a_1 + ... + a_{Q-1}) of a head) that the factorised path takes: its factors
# exp(+-span / 2) <= e^50 ~ 5e21 keep e_s * x_s a normal fp32 / bf16 number for |x| down to 1e-15 and the products far
# from overflow; heads of chunks beyond it take the direct path. At Drama's init (A ~ U(1, 16), dt in [1e-3, 0.1]) the
# fastest heads decay by ~77 per chunk of 64.
FACTOR_SPAN = 100.0


def _direct(acs: torch.Tensor) -> torch.Tensor:
    """[K, H] bool from the in-chunk cumulative decays acs [K, Q, H]: the chunks' heads whose decay A_0 - A_{Q-1}
    exceeds FACTOR_SPAN, which `ssd_chunked` computes by the direct segsum form."""
    return (acs[:, 0] - acs[:, -1]) > FACTOR_SPAN


def direct_heads(a: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """[Bt, chunks, H] bool: where `ssd_chunked(x, a, ..., chunk=chunk)` takes the direct path (a [Bt, T, H])."""
    Bt, T, H = a.shape
    Q = max(1, min(int(chunk), T))
    a = F.pad(a.float(), (0, 0, 0, (-T) % Q))
    return _direct(a.reshape(-1, Q, H).cumsum(1)).view(Bt, -1, H)


def ssd_chunked(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, seg: Optional[torch.Tensor] = None,
                init: Optional[torch.Tensor] = None, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The SSD recurrence S_t = exp(a_t) S_{t-1} + x_t b_t^T, y_t = S_t c_t, in chunked (block) form.

    x [Bt, T, H, P] (dt-scaled inputs), a [Bt, T, H] (dt * A <= 0), b, c [Bt, T, N] (one group), seg [Bt, T]
    non-decreasing segment ids (a new id where the state is reset before that step; None: one segment),
    init [Bt, H, P, N] the state before step 0 (segment 0 only; None: zeros). Returns y [Bt, T, H, P] and
    the state after the last step [Bt, H, P, N] (fp32). Any T (padded to a multiple of the chunk length inside).

    Inside a chunk with cumulative decays A_l (per head), y_l = sum_{s <= l} (c_l . b_s) exp(A_l - A_s) x_s.
    The decay factorises, exp(A_l - A_s) = exp(A_l - r) exp(r - A_s), and c_l . b_s is shared by the heads, so
    the diagonal blocks are one GEMM per chunk over all heads at once, y = e_l * (G @ (e_s * x)) with G [Q, Q]
    and x as [Q, H * P] in its own layout: no [Q, Q] tensor per head (the segsum form spends most of its time
    on exp and masking over those), no transposed copies. r is the middle of the chunk's range of A, so the
    factors are exp(+-span / 2); heads whose span exceeds FACTOR_SPAN (very fast decays) take the direct
    segsum form for their chunk, so the result is exact to rounding for any input.
    """
    Bt, T, H, P = x.shape
    N = b.shape[-1]
    Q = max(1, min(int(chunk), T))
    pad = (-T) % Q
    if seg is None:
        seg = torch.zeros(Bt, T, dtype=torch.long, device=x.device)
    if pad:  # zero inputs and zero decay leave outputs and the final state unchanged
        x, a = F.pad(x, (0, 0, 0, 0, 0, pad)), F.pad(a, (0, 0, 0, pad))
        b, c = F.pad(b, (0, 0, 0, pad)), F.pad(c, (0, 0, 0, pad))
        seg = torch.cat([seg, seg[:, -1:].expand(Bt, pad)], 1)
    nc = (T + pad) // Q
    K, dt = Bt * nc, x.dtype
    xs = x.reshape(K, Q, H, P)
    acs = a.float().reshape(K, Q, H).cumsum(1)  # [K, Q, H] A_l: decay from the chunk's start through step l
    bs, cs = b.reshape(K, Q, N), c.reshape(K, Q, N)
    sg = seg.reshape(K, Q)
    seg_in = torch.cat([torch.zeros_like(sg[:1, :1]).expand(Bt, 1), sg.view(Bt, nc, Q)[:, :-1, -1]], 1).reshape(K)
    to_last = sg == sg[:, -1:]  # [K, Q] steps whose input reaches the chunk's end
    from_in = sg == seg_in[:, None]  # [K, Q] steps the entering state reaches
    tri = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()
    g = (cs @ bs.transpose(1, 2)).masked_fill(~((sg[:, :, None] == sg[:, None, :]) & tri), 0.0)  # [K, Q(l), Q(s)]
    bm, cm = bs * to_last[..., None].to(bs.dtype), cs * from_in[..., None].to(cs.dtype)
    # the factorised path
    direct = _direct(acs)  # [K, H]
    any_direct = bool(direct.any())
    r = 0.5 * (acs[:, :1] + acs[:, -1:]).detach()  # [K, 1, H]; the value does not depend on r
    u = (acs - r).masked_fill(direct[:, None], 0.0)
    on = (~direct)[:, None].to(acs.dtype)
    el, es = u.exp() * on, (-u).exp() * on  # [K, Q, H]: exp(A_l - r), exp(r - A_s); zero for direct heads
    xe = (xs * es[..., None].to(dt)).view(K, Q, H * P)
    z = g.to(dt) @ xe  # [K, Q, H * P]
    states = (xe.transpose(1, 2) @ bm.to(dt)).float().view(K, H, P, N) * el[:, -1, :, None, None]
    if any_direct:
        kk, hh = direct.nonzero(as_tuple=True)
        ad, xd = acs[kk, :, hh], xs[kk, :, hh]  # [n, Q], [n, Q, P]
        yd = ((ad[:, :, None] - ad[:, None, :]).clamp(max=0.0).exp() * g[kk].float()).to(dt) @ xd
        to_end = (ad[:, -1:] - ad).exp() * to_last[kk].to(ad.dtype)  # [n, Q]
        states = states.index_put((kk, hh), ((xd * to_end[..., None].to(dt)).transpose(1, 2) @ bm[kk].to(dt)).float(),
                                  accumulate=True)
    # the scan over chunk states: the state entering chunk k+1 = decayed entering state (if no reset in chunk k) + own
    keep = ((seg_in.view(Bt, nc) == sg.view(Bt, nc, Q)[..., -1]).to(acs.dtype)[..., None]
            * acs.view(Bt, nc, Q, H)[:, :, -1].exp())  # [Bt, C, H]
    states = states.view(Bt, nc, H, P, N)
    s = init.float() if init is not None else states.new_zeros(Bt, H, P, N)
    entering = []
    for k in range(nc):
        entering.append(s)
        s = s * keep[:, k, :, None, None] + states[:, k]
    s_in = torch.stack(entering, 1).view(K, H, P, N)
    # the entering state's contribution, exp(A_l) (c_l . S_in) = exp(A_l - r) (c_l . exp(r) S_in), in the same GEMM pass
    z = torch.baddbmm(z, cm.to(dt), (s_in * r[:, 0, :, None, None].exp()).to(dt).view(K, H * P, N).transpose(1, 2))
    y = z.view(K, Q, H, P) * el[..., None].to(dt)
    if any_direct:
        yd = yd + ((ad.exp() * from_in[kk].to(ad.dtype))[..., None] * (cs[kk].float() @ s_in[kk, hh].transpose(1, 2))).to(dt)
        y = y.transpose(1, 2).index_put((kk, hh), yd, accumulate=True).transpose(1, 2)
    return y.reshape(Bt, nc * Q, H, P)[:, :T], s


def ssd_recurrent(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: Optional[torch.Tensor], reset: Optional[torch.Tensor] = None,
                  init: Optional[torch.Tensor] = None) -> tuple[Optional[torch.Tensor], torch.Tensor]:
    """The same recurrence step by step (`reset` [Bt, T] zeroes the state before a step). Returns y [Bt, T,
    H, P] (None when `c` is None) and the states after every step [Bt, T, H, P, N]."""
    Bt, T, H, P = x.shape
    s = init if init is not None else x.new_zeros(Bt, H, P, b.shape[-1])
    ys, ss = [], []
    for t in range(T):
        dA = a[:, t].float().exp()
        if reset is not None:
            dA = dA * (~reset[:, t].bool())[:, None].to(dA.dtype)
        s = s * dA[..., None, None] + x[:, t, :, :, None] * b[:, t, None, None, :]
        if c is not None:
            ys.append((s @ c[:, t, None, :, None]).squeeze(-1))
        ss.append(s)
    return (torch.stack(ys, 1) if c is not None else None), torch.stack(ss, 1)


class _SSDStep(torch.autograd.Function):
    """One recurrent SSD step: s' = dA s + x b^T, y = s' c, for s [Bt, H, P, N], dA [Bt, H], x [Bt, H, P],
    b, c [Bt, N] (fp32). The same values as those three lines in autograd, but each pass over the full
    state (Bt x H x P x N: 33 MB per layer at imagination sizes, 1024 x 8 x 32 x 16) is done once: the
    forward writes s' once (a scaled copy, then the rank-1 update in place) and the backward reduces
    through batched matmuls instead of materialising broadcast products (autograd's version wrote ~3x
    as many full-state tensors; imagination is bound by these passes, not by FLOPs)."""

    @staticmethod
    def forward(ctx, s, dA, x, b, c):
        Bt, H, P, N = s.shape
        with torch.autocast(s.device.type, enabled=False):  # the state stays fp32 under bf16 autocast
            new = s * dA[..., None, None]
            new.addcmul_(x[..., None], b[:, None, None, :])
            y = torch.bmm(new.view(Bt, H * P, N), c[:, :, None]).view(Bt, H, P)  # heads and P as one GEMM per sample
        ctx.save_for_backward(s, dA, x, b, c, new)
        return y, new

    @staticmethod
    def backward(ctx, gy, gnew):
        s, dA, x, b, c, new = ctx.saved_tensors
        Bt, H, P, N = s.shape
        gy = gy.to(s.dtype).reshape(Bt, H * P)
        cb = c[:, None, None, :]
        g = cb * gy.view(Bt, H, P, 1) if gnew is None else torch.addcmul(gnew.to(s.dtype), gy.view(Bt, H, P, 1), cb)  # dL/ds'
        gf = g.view(Bt, H * P, N)
        need = ctx.needs_input_grad
        gs = g * dA[..., None, None] if need[0] else None
        gdA = torch.linalg.vecdot(g.view(Bt, H, P * N), s.reshape(Bt, H, P * N)) if need[1] else None
        gx = torch.bmm(gf, b[:, :, None]).view(Bt, H, P) if need[2] else None
        gb = torch.bmm(x.reshape(Bt, 1, H * P), gf).view(Bt, N) if need[3] else None  # the sum over heads is in the GEMM
        gc = torch.bmm(gy[:, None, :], new.view(Bt, H * P, N)).view(Bt, N) if need[4] else None
        return gs, gdA, gx, gb, gc


def ssd_step(s: torch.Tensor, dA: torch.Tensor, x: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(y [Bt, H, P], s' [Bt, H, P, N]) of one recurrent step (`_SSDStep`); the recurrence of `ssd_recurrent`."""
    return _SSDStep.apply(s, dA, x, b, c)


def _fused_ssd(x, dt, A, b, c, seg, init, chunk):
    """mamba_ssm's fused chunked scan (CUDA, Triton) with the same inputs as `ssd_chunked` (x un-scaled)."""
    out = _fused_scan(x, dt, A, b[:, :, None], c[:, :, None], chunk_size=max(16, int(chunk)), seq_idx=seg.to(torch.int32),
                      initial_states=init, return_final_states=True)
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------- blocks
class Mamba2Mixer(nn.Module):
    """One Mamba-2 mixer (no tensor parallelism, one B/C group): parallel `forward` over a sequence
    with resets and an incoming (conv window, SSM state); recurrent `step` for one token."""

    def __init__(self, d_model: int, d_state: int, expand: int, headdim: int, d_conv: int, chunk: int, n_layer: int,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, a_min: float = 1.0, a_max: float = 16.0):
        super().__init__()
        self.d_inner = expand * d_model
        if self.d_inner % headdim:
            raise UserError(f"model=mamba: expand * d_model = {self.d_inner} is not divisible by headdim={headdim}; valid: headdim dividing it (e.g. 64)")
        self.N, self.P, self.K, self.chunk = d_state, headdim, d_conv, chunk
        self.H = self.d_inner // headdim
        self.conv_dim = self.d_inner + 2 * d_state
        self.in_proj = nn.Linear(d_model, self.d_inner + self.conv_dim + self.H, bias=False)
        self.conv_w = nn.Parameter(torch.empty(self.conv_dim, d_conv))
        self.conv_b = nn.Parameter(torch.empty(self.conv_dim))
        bound = 1.0 / math.sqrt(d_conv)  # nn.Conv1d's default init (depthwise: fan_in = kernel width)
        nn.init.uniform_(self.conv_w, -bound, bound)
        nn.init.uniform_(self.conv_b, -bound, bound)
        dt = torch.exp(torch.rand(self.H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.A_log = nn.Parameter(torch.empty(self.H).uniform_(a_min, a_max).log())
        self.D = nn.Parameter(torch.ones(self.H))
        self.norm = nn.RMSNorm(self.d_inner, eps=1e-5)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        with torch.no_grad():
            self.out_proj.weight /= math.sqrt(n_layer)  # reference _init_weights, one residual per layer

    @property
    def state_size(self) -> int:
        return self.H * self.P * self.N

    @property
    def window_size(self) -> int:
        return self.conv_dim * (self.K - 1)

    def _split(self, u: torch.Tensor):
        return self.in_proj(u).split([self.d_inner, self.conv_dim, self.H], -1)

    def _out(self, y: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = y + x * self.D.to(x.dtype)[:, None]  # [.., H, P]
        y = y.reshape(*y.shape[:-2], self.d_inner)
        return self.out_proj(self.norm(y * F.silu(z)))

    def forward(self, u: torch.Tensor, seg: torch.Tensor, window: torch.Tensor, ssm: torch.Tensor, kernel: str = "torch",
                need_states: bool = False):
        """u [Bt, T, d_model]; seg [Bt, T] segment ids (a new id: reset before that token); window [Bt, K-1,
        conv_dim] and ssm [Bt, H, P, N] the incoming state (segment 0). Returns (out, xbc, (x, a, b)) where
        xbc [Bt, T, conv_dim] are the conv inputs (for the windows) and x, a, b the SSD inputs."""
        Bt, T, _ = u.shape
        z, xbc, dt = self._split(u)
        # causal depthwise conv over [incoming window, xbc]; taps from another segment are masked out
        full = torch.cat([window.to(xbc.dtype), xbc], 1)  # [Bt, K-1+T, conv_dim]
        seg_full = torch.cat([torch.zeros_like(seg[:, :1]).expand(Bt, self.K - 1), seg], 1)
        acc = self.conv_b.to(xbc.dtype)
        for i in range(self.K):
            m = (seg_full[:, i:i + T] == seg).to(xbc.dtype)[..., None]
            acc = acc + full[:, i:i + T] * m * self.conv_w[:, i].to(xbc.dtype)
        xBC = F.silu(acc)
        x, b, c = xBC.split([self.d_inner, self.N, self.N], -1)
        x = x.reshape(Bt, T, self.H, self.P)
        dt = F.softplus(dt.float() + self.dt_bias)  # [Bt, T, H]
        A = -self.A_log.float().exp()
        if kernel == "mamba_ssm":
            y, _ = _fused_ssd(x, dt.to(x.dtype), A, b, c, seg, ssm, self.chunk)
        else:
            y, _ = ssd_chunked(x * dt[..., None].to(x.dtype), dt * A, b, c, seg, ssm, self.chunk)
        out = self._out(y.to(x.dtype), x, z)
        return out, xbc, (x * dt[..., None].to(x.dtype), dt * A, b)

    def step(self, u: torch.Tensor, window: torch.Tensor, ssm: torch.Tensor):
        """One token u [Bt, d_model] from (window [Bt, K-1, conv_dim], ssm [Bt, H, P, N])."""
        z, xbc, dt = self._split(u)
        full = torch.cat([window.to(xbc.dtype), xbc[:, None]], 1)  # [Bt, K, conv_dim]
        xBC = F.silu((full * self.conv_w.t().to(xbc.dtype)).sum(1) + self.conv_b.to(xbc.dtype))
        x, b, c = xBC.split([self.d_inner, self.N, self.N], -1)
        x = x.reshape(-1, self.H, self.P)
        dt = F.softplus(dt.float() + self.dt_bias)  # [Bt, H]
        dA = (dt * -self.A_log.float().exp()).exp()
        y, s = ssd_step(ssm.float(), dA, x.float() * dt[..., None], b.float(), c.float())
        return self._out(y.to(x.dtype), x, z), full[:, 1:], s


@dataclass
class MambaState(State):
    deter: torch.Tensor  # [*, d_model] h: the core's output after the tokens before this step (0 at a start)
    stoch: torch.Tensor  # [*, stoch * classes] one-hot sample z
    logits: torch.Tensor  # [*, stoch * classes] log-probs it was drawn from
    ssm: torch.Tensor  # [*, n_layer * H * P * N] each layer's SSM state (flattened)
    conv: torch.Tensor  # [*, n_layer * (d_conv - 1) * conv_dim] each layer's conv window (flattened)


@register("mamba")
class Mamba(WorldModel):
    default_algo = "dreamer"
    has_decoder = True
    native_signals = frozenset()
    markov_obs = False
    train_on = "sequences"
    #: contract / matrix tests: chunk 4 so their [4, 8] batches cross a chunk boundary
    tiny = dict(size="XS", d_model=16, n_layer=1, d_state=4, headdim=8, chunk=4, hidden=16, layers=1, depth=4, stoch=4,
                classes=4, bins=31)

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.Space,
        size: str = "S",
        d_model: Optional[int] = None,
        n_layer: Optional[int] = None,
        d_state: Optional[int] = None,
        hidden: Optional[int] = None,
        layers: Optional[int] = None,
        depth: Optional[int] = None,
        expand: int = 2,
        headdim: int = 64,
        d_conv: int = 4,
        chunk: int = 64,
        kernel: str = "torch",
        stoch: int = 32,
        classes: int = 32,
        unimix: float = 0.01,
        free_nats: float = 1.0,
        kl_dyn: float = 1.0,
        kl_rep: float = 0.1,
        rec_scale: float = 1.0,
        rew_scale: float = 1.0,
        con_scale: float = 1.0,
        bins: int = 255,
        imglayers: int = 0,
        seed: Optional[int] = None,  # accepted for the registry; WorldModel.from_config seeds the init
    ):
        super().__init__()
        if size not in SIZES:
            raise UserError(f"model=mamba: unknown size {size!r}; valid: {', '.join(SIZES)}")
        if kernel not in KERNELS:
            raise UserError(f"model.kernel={kernel!r}; valid: {', '.join(KERNELS)}")
        if kernel == "mamba_ssm" and _fused_scan is None:
            raise UserError("model.kernel=mamba_ssm needs the mamba_ssm package (CUDA only); valid here: torch or auto")
        p = SIZES[size]
        self.d_model = int(d_model or p["d_model"])
        self.n_layer = int(n_layer or p["n_layer"])
        self.d_state = int(d_state or p["d_state"])
        self.hidden = int(hidden or p["hidden"])
        self.layers = int(layers if layers is not None else p["layers"])
        self.depth = int(depth or p["depth"])
        ints = dict(d_model=self.d_model, n_layer=self.n_layer, d_state=self.d_state, hidden=self.hidden, depth=self.depth,
                    expand=expand, headdim=headdim, d_conv=d_conv, chunk=chunk, stoch=stoch, classes=classes)
        bad = {k: v for k, v in ints.items() if int(v) < 1}
        if bad or self.layers < 0 or imglayers < 0 or bins < 2 or not 0 <= unimix < 1:
            raise UserError(f"model=mamba: bad sizes {bad or dict(layers=self.layers, imglayers=imglayers, bins=bins, unimix=unimix)}; "
                            "valid: d_model, n_layer, d_state, hidden, depth, expand, headdim, d_conv, chunk, stoch, classes >= 1; "
                            "layers, imglayers >= 0; bins >= 2; 0 <= unimix < 1")
        self.kernel = kernel
        self.free_nats, self.kl_dyn, self.kl_rep = free_nats, kl_dyn, kl_rep
        self.rec_scale, self.rew_scale, self.con_scale = rec_scale, rew_scale, con_scale
        self.discrete, self.action_dim = action_spec(action_space, "mamba")
        self.latent = CategoricalLatent(stoch, classes, unimix)
        self.stoch_dim = self.latent.dim
        self.feat_dim = self.d_model + self.stoch_dim
        H, L = self.hidden, max(1, self.layers)

        self.encoder = ObsEncoder(obs_space, self.depth, H, L, who="mamba")
        self.decoder = ObsDecoder(self.stoch_dim, obs_space, self.depth, H, L, who="mamba")  # Drama: from z alone
        self.post = nn.Linear(self.encoder.out_dim, self.stoch_dim)
        self.prior = dreamer_mlp(self.d_model, self.stoch_dim, H, imglayers)
        D = self.d_model
        self.stem = nn.Sequential(nn.Linear(self.stoch_dim + self.action_dim, D), nn.RMSNorm(D, eps=1e-5), nn.SiLU())
        self.norms = nn.ModuleList([nn.RMSNorm(D, eps=1e-5) for _ in range(self.n_layer)])
        self.mixers = nn.ModuleList([Mamba2Mixer(D, self.d_state, expand, headdim, d_conv, chunk, self.n_layer) for _ in range(self.n_layer)])
        self.norm_f = nn.RMSNorm(D, eps=1e-5)
        for m in [self.stem, self.mixers]:  # reference _init_weights: Linear biases zero
            for mod in m.modules():
                if isinstance(mod, nn.Linear) and mod.bias is not None:
                    nn.init.zeros_(mod.bias)
        self.reward_head = RewardHead(self.feat_dim, H, L, bins)
        self.cont_head = ContinueHead(self.feat_dim, H, L)

    # ------------------------------------------------------------------------------------------ core
    def _use_fused(self, x: torch.Tensor) -> str:
        if self.kernel == "mamba_ssm" or (self.kernel == "auto" and _fused_scan is not None and x.is_cuda):
            return "mamba_ssm"
        return "torch"

    def _unpack(self, state: MambaState):
        """Per-layer (window [Bt, K-1, conv_dim], ssm [Bt, H, P, N]) of a flat state batch [Bt]."""
        Bt = state.ssm.shape[0]
        m0 = self.mixers[0]
        ssm = state.ssm.reshape(Bt, self.n_layer, m0.H, m0.P, m0.N)
        conv = state.conv.reshape(Bt, self.n_layer, m0.K - 1, m0.conv_dim)
        # unbind, not [:, i]: its backward stacks the layers' gradients (indexing zero-fills a full-size one per layer)
        return list(zip(conv.unbind(1), ssm.unbind(1)))

    def core(self, tokens: torch.Tensor, seg: torch.Tensor, carry: list, need_states: bool = False):
        """The stack over a token sequence [Bt, T, stoch + action] with segment ids [Bt, T] from the incoming
        per-layer carry. Returns h [Bt, T, d_model] and, with `need_states`, each layer's (xbc, ssd inputs)."""
        x = self.stem(tokens)
        kernel = self._use_fused(x)
        aux = []
        for norm, mixer, (window, ssm) in zip(self.norms, self.mixers, carry):
            out, xbc, ssd_in = mixer(norm(x), seg, window, ssm, kernel)
            x = x + out
            aux.append((xbc, ssd_in))
        return self.norm_f(x), aux

    def core_step(self, tokens: torch.Tensor, carry: list):
        x = self.stem(tokens)
        new = []
        for norm, mixer, (window, ssm) in zip(self.norms, self.mixers, carry):
            out, w, s = mixer.step(norm(x), window, ssm)
            x = x + out
            new.append((w, s))
        return self.norm_f(x), new

    def prior_logp(self, deter: torch.Tensor) -> torch.Tensor:
        return self.latent.mix(self.prior(deter))

    def _carry_states(self, aux: list, carry: list, seg: torch.Tensor, drop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The recurrent state after every token [Bt, T] (flattened per layer), without gradients: SSM states
        by the step-by-step recurrence from the SSD inputs, conv windows from the conv inputs; zero where
        `drop` (the token belonged to an episode that ended there)."""
        Bt, T = seg.shape
        keep = (~drop).float()
        ssms, convs = [], []
        with torch.no_grad():
            reset = torch.cat([torch.zeros_like(seg[:, :1]), seg[:, 1:] - seg[:, :-1]], 1).bool()
            for (xbc, (x, a, b)), (window, ssm), mixer in zip(aux, carry, self.mixers):
                _, ss = ssd_recurrent(x.float(), a, b.float(), None, reset, ssm.float())
                ssms.append((ss * keep[..., None, None, None]).reshape(Bt, T, -1))
                K = mixer.K
                full = torch.cat([window.float(), xbc.float()], 1)  # [Bt, K-1+T, conv_dim]
                seg_full = torch.cat([torch.zeros_like(seg[:, :1]).expand(Bt, K - 1), seg], 1)
                idx = torch.arange(T, device=seg.device)[:, None] + torch.arange(1, K, device=seg.device)  # [T, K-1]
                win = full[:, idx]  # [Bt, T, K-1, conv_dim]: the last K-1 inputs after token t
                ok = (seg_full[:, idx] == seg[..., None]) & ~drop[..., None]
                convs.append((win * ok[..., None].float()).reshape(Bt, T, -1))
        return torch.cat(ssms, -1), torch.cat(convs, -1)

    # ------------------------------------------------------------------------------------------ protocol
    def initial(self, batch_size: int) -> MambaState:
        w = self.post.weight
        z = lambda d: torch.zeros(batch_size, d, device=w.device, dtype=torch.float32)  # noqa: E731
        m0 = self.mixers[0]
        return MambaState(deter=z(self.d_model), stoch=z(self.stoch_dim), logits=z(self.stoch_dim),
                          ssm=z(self.n_layer * m0.state_size), conv=z(self.n_layer * m0.window_size))

    def observe(self, obs: Any, action: torch.Tensor, is_first: torch.Tensor, state: Optional[MambaState] = None,
                prev_action: Optional[torch.Tensor] = None, need_states: bool = True) -> MambaState:
        """Posterior states [B, T]. Step t's h consumes the tokens (z_s, a_s) for s < t of its episode: the
        token (state.stoch, prev_action) first when `state` continues a previous call."""
        B, T = is_first.shape[:2]
        first = is_first.bool()
        logp = self.latent.mix(self.post(self.encoder(obs)))  # [B, T, S]
        z = self.latent.sample(logp.transpose(0, 1).contiguous()).transpose(0, 1)  # time-major draws: as one step at a time
        act = self.action_input(action).reshape(B, T, -1)
        fresh = state is None
        if fresh:
            state = self.initial(B)
        prev_a = self.action_input(prev_action).reshape(B, 1, -1) if prev_action is not None else torch.zeros_like(act[:, :1])
        tokens, drop = episode_tokens(z, act, first, state.stoch, prev_a, fresh)  # token k = (z_{k-1}, a_{k-1})
        seg = torch.cat([torch.zeros_like(drop[:, :1], dtype=torch.long), drop[:, :-1].long()], 1).cumsum(1)
        carry = self._unpack(state)
        h, aux = self.core(tokens, seg, carry)
        h = h * (~drop).to(h.dtype)[..., None]
        if need_states:
            ssm, conv = self._carry_states(aux, carry, seg, drop)
        else:  # training-only callers that never step from these states
            ssm = torch.zeros(B, T, 0, device=h.device)
            conv = ssm
        return MambaState(deter=h, stoch=z, logits=logp, ssm=ssm, conv=conv)

    def step(self, state: MambaState, action: torch.Tensor) -> MambaState:
        lead = state.deter.shape[:-1]
        flat = state.reshape(-1) if len(lead) != 1 else state
        a = self.action_input(action).reshape(flat.stoch.shape[0], -1)
        tok = torch.cat([flat.stoch, a.to(flat.stoch.dtype)], -1)
        h, new = self.core_step(tok, self._unpack(flat))
        logp = self.prior_logp(h)
        out = MambaState(deter=h, stoch=self.latent.sample(logp), logits=logp,
                         ssm=torch.cat([s.reshape(s.shape[0], -1) for _, s in new], -1),
                         conv=torch.cat([w.reshape(w.shape[0], -1) for w, _ in new], -1))
        return out.reshape(*lead) if len(lead) != 1 else out

    def features(self, state: MambaState) -> torch.Tensor:
        return torch.cat([state.deter, state.stoch.to(state.deter.dtype)], -1)

    def reward(self, state: MambaState) -> torch.Tensor:
        return self.reward_head.mean(self.features(state))

    def cont(self, state: MambaState) -> torch.Tensor:
        return self.cont_head.prob(self.features(state))

    def decode(self, state: MambaState) -> Any:
        return self.decoder.decode(state.stoch)

    # ------------------------------------------------------------------------------------------ loss
    def backbone_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float], MambaState]:
        """Drama's world-model loss on a [B, T] sequence batch; returns the posterior states (with their
        recurrent states: every one is an imagination start)."""
        post = self.observe(batch["obs"], batch["action"], batch["is_first"])
        rec = self.decoder.loss(post.stoch, batch["obs"])  # Drama: the decoder reads z alone
        total, metrics = latent_model_loss(self, post.logits, self.prior_logp(post.deter), self.features(post), rec, batch)
        return total, metrics, post
