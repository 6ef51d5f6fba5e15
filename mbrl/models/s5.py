"""S5 / S4D state-space world model in the style of R2I (Samsami et al., "Mastering Memory Tasks with World
Models", ICLR 2024, arXiv:2403.04253; reference code github.com/chandar-lab/Recall2Imagine, `ssm_nets.py: S3M`,
`ssm/mimo.py`, `ssm/common.py`). S5: Smith, Warrington & Linderman, ICLR 2023 (arXiv:2208.04933). S4D: Gu, Gupta,
Goel & Re, NeurIPS 2022 (arXiv:2206.11893), the diagonal kernel family S4WM (Deng et al. 2023) builds on.

The model (each point cites the reference):
- non-recurrent posterior (R2I `nonrecurrent_enc: True`): z_t ~ Cat(post(enc(o_t))) from the observation alone,
  `stoch` x `classes` one-hot latents with 1% unimix (the shared `CategoricalLatent`), so the whole posterior
  sequence is known before the sequence core runs and the core can be trained with a parallel scan.
- sequence core over tokens (z_t, a_t): input layer Linear -> LayerNorm -> SiLU of width H (R2I `img_in`), then
  `n_layer` S5 blocks (R2I `ssm.n_layers`), then Linear -> LayerNorm -> SiLU to `deter` units (R2I `out_proj`;
  it has no norm there). Its output h_t gives the prior of z_{t+1} through `imglayers` dense layers (R2I
  `img_out`, one layer); reward / continue heads and the decoder read [h_{t-1}, z_t] (R2I heads' and decoder's
  `inputs: [deter, stoch]`; `decoder_input=stoch` decodes from z alone, as Drama).
- S5 block (R2I `SingleLayer` with `prenorm: False, mlp: True, glu: True, use_norm: True`): u -> S5 SSM ->
  GELU -> GLU (W1 y * sigmoid(W2 y)) -> residual -> LayerNorm (post-norm; `prenorm=True` normalises the input
  instead).
- S5 SSM (MIMO, diagonal, complex): x_t = L x_{t-1} + B u_t, y_t = Re(C x_t) (2 Re with conjugate symmetry)
  + D * u_t, with L = diag(Lambda) discretised per state by a learnable log-step Delta: ZOH (the default here;
  S5's default) Lbar = exp(Lambda Delta), Bbar = (Lbar - 1) / Lambda * B, or bilinear (R2I's
  `discretization: bilinear`) Lbar = (1 + Delta Lambda / 2) / (1 - Delta Lambda / 2), Bbar = Delta / (1 - Delta
  Lambda / 2) * B. Initialisation as S5: Lambda the eigenvalues of HiPPO-N (the normal part of HiPPO-LegS,
  -1/2 I + a skew-symmetric matrix), block-diagonal over `blocks` blocks (R2I `n_blocks: 8`), B = V^-1 B0, C =
  C0 V with V the eigenvectors and B0, C0 LeCun-normal, D ~ N(0, 1), log Delta ~ U(log 1e-3, log 1e-1) (R2I
  `dt_min`, `dt_max`). With `conj_sym` (S5's default; R2I runs without it) only one eigenvalue of each conjugate
  pair is kept: P/2 complex states for state size P. Real parts are clipped to <= -1e-4 in use (S5's
  `clip_eigs`, recommended for unbounded lengths: imagination and acting run past the training length).
- S4D option (`kernel=s4d`, what `model=s4` selects): SISO per channel, H independent diagonal SSMs of N states
  each (N/2 complex with `conj_sym`), Lambda_n = -1/2 + i pi n (S4D-Lin) or -1/2 + i N/pi (N/(2n+1) - 1)
  (S4D-Inv), one log-step per channel, B = 1, C ~ complex N(0, 1), y = 2 Re(sum_n C_n x_n) + D u; the same
  discretisations, blocks and scan.
- loss (`WorldModel.update`): reconstruction + two-hot reward + Bernoulli continue + 0.5 * dyn + 0.1 * rep KL
  with 1 free nat (R2I `loss_scales: dyn 0.5, rep 0.1`, `free: 1.0`).

Training runs a **parallel associative scan** (`linear_scan`: recursive odd/even pairing, Blelloch-style,
O(T) work and O(log T) depth, complex64) of the affine maps x -> a_t x + b_t. Episode starts reset the state
inside the operator: a reset before step t sets a_t := 0, so nothing from before the reset reaches it (R2I's
`vector_operator_with_dones_initial` with a zero initial vector). Imagination and acting use the recurrent
form, O(1) per step; the state is each layer's complex SSM state, stored as real and imaginary parts in
`S5State.ssm`, so particles, indexing and `imagine` work as for any backbone.

State layout at sequence index t (as `mamba.py`): `deter` = h_{t-1} (the core's output after the tokens
before t; zeros at an episode start), `stoch` = z_t, and the SSM states after those tokens; `step(s_t, a_t)`
consumes the token (z_t, a_t).
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
from mbrl.models.nets import dreamer_mlp, norm_act_linear
from mbrl.models.parts import CategoricalLatent, ContinueHead, ObsDecoder, ObsEncoder, RewardHead, action_spec, episode_tokens, latent_model_loss

SIZES: dict[str, dict[str, int]] = {
    "XS": dict(d_model=128, d_state=64, deter=256, n_layer=2, hidden=256, layers=1, depth=16),
    # S is R2I's DMC / Atari100k setting (recall2imagine/configs.yaml, presets dmc_proprio, dmc_vision, atari100k:
    # rssm.units 512 = SSM width H (`.*\.units: 512`), rssm.hidden 128 = state size P (default), rssm.deter 512,
    # ssm.n_layers 4, `.*\.layers: 2`, cnn_depth 32)
    "S": dict(d_model=512, d_state=128, deter=512, n_layer=4, hidden=512, layers=2, depth=32),
    "M": dict(d_model=1024, d_state=256, deter=1024, n_layer=4, hidden=640, layers=3, depth=48),
}
#: state size N per channel of the S4D option (H * N states a layer, so much smaller than S5's P per layer)
S4D_STATE = {"XS": 16, "S": 16, "M": 32}
KERNELS = ("s5", "s4d")
DISCRETIZATIONS = ("zoh", "bilinear")
S4D_INITS = ("lin", "inv")
DECODER_INPUTS = ("stoch", "features")


# ---------------------------------------------------------------------------------------------- scans
def _keep(a: torch.Tensor, reset: Optional[torch.Tensor]) -> torch.Tensor:
    """a [Bt, T, ...] with a := 0 where `reset` [Bt, T] (the state before that step is dropped)."""
    a = a.expand(*reset.shape, *a.shape[2:]) if reset is not None and a.shape[:2] != reset.shape else a
    if reset is None:
        return a
    return a * (~reset.bool()).reshape(*reset.shape, *([1] * (a.dim() - 2))).to(a.dtype)


def _assoc_scan(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inclusive scan over dim 1 of the affine maps x -> a_t x + b_t under (a_i, b_i) . (a_j, b_j) = (a_j a_i,
    a_j b_i + b_j): returns the composed (A_t, X_t) of steps 0..t, X_t being the state after step t from 0.
    Recursive odd/even pairing (Blelloch-style): combine neighbours, scan the pairs, fill in the even steps."""
    T = a.shape[1]
    if T == 1:
        return a, b
    if T % 2:  # pad with the identity map (1, 0)
        A, X = _assoc_scan(torch.cat([a, torch.ones_like(a[:, :1])], 1), torch.cat([b, torch.zeros_like(b[:, :1])], 1))
        return A[:, :T], X[:, :T]
    ae, ao, be, bo = a[:, 0::2], a[:, 1::2], b[:, 0::2], b[:, 1::2]
    Ao, Xo = _assoc_scan(ao * ae, ao * be + bo)  # prefixes ending at the odd steps 1, 3, 5, ...
    Ae = torch.cat([ae[:, :1], ae[:, 1:] * Ao[:, :-1]], 1)  # prefixes ending at the even steps 0, 2, 4, ...
    Xe = torch.cat([be[:, :1], ae[:, 1:] * Xo[:, :-1] + be[:, 1:]], 1)
    lead = a.shape[:1] + (T,)
    return torch.stack([Ae, Ao], 2).reshape(*lead, *a.shape[2:]), torch.stack([Xe, Xo], 2).reshape(*lead, *b.shape[2:])


def linear_scan(a: torch.Tensor, b: torch.Tensor, reset: Optional[torch.Tensor] = None,
                init: Optional[torch.Tensor] = None) -> torch.Tensor:
    """States of x_t = a_t x_{t-1} + b_t by the parallel associative scan. a [Bt, T, *S] (or broadcastable
    [1, 1, *S]), b [Bt, T, *S] (real or complex), reset [Bt, T] (x_{t-1} := 0 before step t: a_t := 0),
    init [Bt, *S] the state before step 0 (None: zeros). Returns x [Bt, T, *S]."""
    a = _keep(a.expand_as(b) if a.shape != b.shape else a, reset)
    if init is not None:  # fold the incoming state into the first map: a_0 x_init + b_0
        b = torch.cat([b[:, :1] + a[:, :1] * init[:, None].to(b.dtype), b[:, 1:]], 1)
    return _assoc_scan(a, b)[1]


def linear_recurrence(a: torch.Tensor, b: torch.Tensor, reset: Optional[torch.Tensor] = None,
                      init: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The same recurrence step by step (the reference the scan is tested against)."""
    a = _keep(a.expand_as(b) if a.shape != b.shape else a, reset)
    x = init.to(b.dtype) if init is not None else torch.zeros_like(b[:, 0])
    xs = []
    for t in range(b.shape[1]):
        x = a[:, t] * x + b[:, t]
        xs.append(x)
    return torch.stack(xs, 1)


# ---------------------------------------------------------------------------------------------- init
def hippo_n(n: int) -> torch.Tensor:
    """The normal part of HiPPO-LegS [n, n] (fp64): A_LegS + p p^T with p_k = sqrt(k + 1/2), i.e. -1/2 on the
    diagonal and -+p_j p_k below / above it (S5 sec. 4.1; S4's NPLR form)."""
    p = torch.sqrt(torch.arange(n, dtype=torch.float64) + 0.5)
    pp = p[:, None] * p[None, :]
    return torch.triu(pp, 1) - torch.tril(pp, -1) - 0.5 * torch.eye(n, dtype=torch.float64)


def hippo_n_eig(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues [n] (ascending imaginary parts) and unitary eigenvectors [n, n] (complex128) of HiPPO-N:
    -1/2 + i w with w, V from the Hermitian eigenproblem of -i times its skew-symmetric part."""
    skew = hippo_n(n) + 0.5 * torch.eye(n, dtype=torch.float64)
    w, V = torch.linalg.eigh(-1j * skew.to(torch.complex128))
    return torch.complex(torch.full_like(w, -0.5), w), V


def discretize(lam: torch.Tensor, dt: torch.Tensor, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(Lbar, gain) of a diagonal continuous-time system: Bbar = gain * B. `zoh` or `bilinear`."""
    if method == "zoh":
        lbar = torch.exp(lam * dt)
        return lbar, (lbar - 1) / lam
    inv = 1 / (1 - dt / 2 * lam)
    return inv * (1 + dt / 2 * lam), inv * dt


def _fp32(fn):
    """Run an SSM method in fp32 outside autocast (complex tensors have no bf16 / fp16 kernels; the
    recurrence is kept in full precision anyway)."""
    def wrapped(self, u, *args):
        with torch.autocast(device_type=u.device.type, enabled=False):
            return fn(self, u.float(), *args)
    wrapped.__doc__, wrapped.__name__ = fn.__doc__, fn.__name__
    return wrapped


def _log_steps(shape: tuple[int, ...], dt_min: float, dt_max: float) -> torch.Tensor:
    return torch.rand(shape) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)


class S5SSM(nn.Module):
    """The S5 layer: a MIMO diagonal complex SSM from H inputs to H outputs with `P` states (P/2 complex with
    conjugate symmetry), HiPPO-N initialisation over `blocks` blocks."""

    def __init__(self, H: int, P: int, blocks: int, conj_sym: bool, discretization: str, dt_min: float, dt_max: float):
        super().__init__()
        if P % blocks or (conj_sym and (P // blocks) % 2):
            raise UserError(f"model=s5: d_state={P} with blocks={blocks}{' and conj_sym' if conj_sym else ''}; valid: d_state a multiple of "
                            f"blocks{' whose block size is even (conjugate pairs)' if conj_sym else ''} (e.g. d_state 128, blocks 8)")
        bs = P // blocks
        lam, V = hippo_n_eig(bs)
        if conj_sym:  # keep the eigenvalues with positive imaginary parts, one of each conjugate pair
            lam, V = lam[bs // 2:], V[:, bs // 2:]
        self.H, self.n, self.scale, self.method = H, lam.shape[0] * blocks, 2.0 if conj_sym else 1.0, discretization
        lam = lam.repeat(blocks)
        Vb = torch.block_diag(*([V] * blocks))  # [P, P'] eigenvectors; V^-1 = V^H (unitary), restricted to the kept half
        B0 = torch.randn(P, H, dtype=torch.float64) / math.sqrt(H)  # LeCun normal
        C0 = torch.complex(torch.randn(H, P, dtype=torch.float64), torch.randn(H, P, dtype=torch.float64)) / math.sqrt(2 * P)
        Bt, Ct = Vb.conj().T @ B0.to(torch.complex128), C0 @ Vb  # [P', H], [H, P']
        self.lam_re, self.lam_im = nn.Parameter(lam.real.float()), nn.Parameter(lam.imag.float())
        self.B_re, self.B_im = nn.Parameter(Bt.real.float()), nn.Parameter(Bt.imag.float())
        self.C_re, self.C_im = nn.Parameter(Ct.real.float()), nn.Parameter(Ct.imag.float())
        self.D = nn.Parameter(torch.randn(H))
        self.log_step = nn.Parameter(_log_steps((self.n,), dt_min, dt_max))

    @property
    def state_size(self) -> int:
        """Complex states per row."""
        return self.n

    def lam(self) -> torch.Tensor:
        return torch.complex(self.lam_re.clamp(max=-1e-4), self.lam_im)

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Lbar [P'], Bbar real and imaginary parts [P', H])."""
        lbar, gain = discretize(self.lam(), self.log_step.exp(), self.method)
        bbar = gain[:, None] * torch.complex(self.B_re, self.B_im)
        return lbar, bbar.real, bbar.imag

    @_fp32
    def forward(self, u: torch.Tensor, reset: torch.Tensor, init: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u [Bt, T, H] real, reset [Bt, T], init [Bt, P'] complex -> (y [Bt, T, H], states [Bt, T, P'])."""
        lbar, br, bi = self.discrete()
        x = linear_scan(lbar.reshape(1, 1, -1), torch.complex(u @ br.T, u @ bi.T), reset, init)
        return self._out(x, u), x

    @_fp32
    def step(self, u: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: u [Bt, H], x [Bt, P'] complex -> (y [Bt, H], x')."""
        lbar, br, bi = self.discrete()
        x = lbar * x + torch.complex(u @ br.T, u @ bi.T)
        return self._out(x, u), x

    def _out(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.scale * (x.real @ self.C_re.T - x.imag @ self.C_im.T) + u * self.D


class S4DSSM(nn.Module):
    """The S4D layer: H independent SISO diagonal SSMs (one per channel) of `N` states each (N/2 complex with
    conjugate symmetry), S4D-Lin or S4D-Inv initialisation, one log-step per channel."""

    def __init__(self, H: int, N: int, conj_sym: bool, discretization: str, dt_min: float, dt_max: float, init: str):
        super().__init__()
        if conj_sym and N % 2:
            raise UserError(f"model=s4: d_state={N} with conj_sym; valid: an even d_state (conjugate pairs), or model.conj_sym=false")
        n = N // 2 if conj_sym else N
        k = torch.arange(n, dtype=torch.float32)
        im = math.pi * k if init == "lin" else N / math.pi * (N / (2 * k + 1) - 1)
        self.H, self.N, self.scale, self.method = H, n, 2.0 if conj_sym else 1.0, discretization
        self.lam_re = nn.Parameter(torch.full((H, n), -0.5))
        self.lam_im = nn.Parameter(im.repeat(H, 1))
        self.B_re, self.B_im = nn.Parameter(torch.ones(H, n)), nn.Parameter(torch.zeros(H, n))
        self.C_re, self.C_im = nn.Parameter(torch.randn(H, n) * 0.5**0.5), nn.Parameter(torch.randn(H, n) * 0.5**0.5)
        self.D = nn.Parameter(torch.randn(H))
        self.log_step = nn.Parameter(_log_steps((H,), dt_min, dt_max))

    @property
    def state_size(self) -> int:
        return self.H * self.N

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor]:
        lam = torch.complex(self.lam_re.clamp(max=-1e-4), self.lam_im)
        lbar, gain = discretize(lam, self.log_step.exp()[:, None], self.method)
        return lbar, gain * torch.complex(self.B_re, self.B_im)  # [H, N'] each

    @_fp32
    def forward(self, u: torch.Tensor, reset: torch.Tensor, init: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        Bt, T, H = u.shape
        lbar, bbar = self.discrete()
        x = linear_scan(lbar.reshape(1, 1, -1), (u[..., None] * bbar).reshape(Bt, T, -1), reset, init)
        return self._out(x, u), x

    @_fp32
    def step(self, u: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lbar, bbar = self.discrete()
        x = lbar.reshape(-1) * x + (u[..., None] * bbar).reshape(u.shape[0], -1)
        return self._out(x, u), x

    def _out(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        xs = x.reshape(*x.shape[:-1], self.H, self.N)
        return self.scale * (xs.real * self.C_re - xs.imag * self.C_im).sum(-1) + u * self.D


class S5Block(nn.Module):
    """One residual block: SSM -> GELU -> GLU (or Linear) -> residual, LayerNorm after (R2I, `prenorm=False`)
    or on the block's input (`prenorm=True`)."""

    def __init__(self, ssm: nn.Module, d_model: int, glu: bool, prenorm: bool):
        super().__init__()
        self.ssm, self.prenorm = ssm, prenorm
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, d_model)
        self.gate = nn.Linear(d_model, d_model) if glu else None

    def _mix(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = F.gelu(y).to(x.dtype)
        y = self.out(y) * torch.sigmoid(self.gate(y)) if self.gate is not None else self.out(y)
        x = x + y
        return x if self.prenorm else self.norm(x)

    def forward(self, x: torch.Tensor, reset: torch.Tensor, init: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, states = self.ssm(self.norm(x) if self.prenorm else x, reset, init)
        return self._mix(x, y), states

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, state = self.ssm.step(self.norm(x) if self.prenorm else x, state)
        return self._mix(x, y), state


# ---------------------------------------------------------------------------------------------- model
@dataclass
class S5State(State):
    deter: torch.Tensor  # [*, deter] h: the core's output after the tokens before this step (0 at a start)
    stoch: torch.Tensor  # [*, stoch * classes] one-hot sample z
    logits: torch.Tensor  # [*, stoch * classes] log-probs it was drawn from
    ssm: torch.Tensor  # [*, n_layer * 2 * states] each layer's complex SSM state (real parts, then imaginary parts)


@register("s5")
class S5(WorldModel):
    default_algo = "dreamer"
    has_decoder = True
    native_signals = frozenset()
    markov_obs = False
    train_on = "sequences"
    #: the kernel a config without `kernel` gets (`model=s4` preselects S4D)
    default_kernel = "s5"
    #: contract / matrix tests
    tiny = dict(size="XS", d_model=16, d_state=8, deter=16, n_layer=2, blocks=2, hidden=16, layers=1, depth=4, stoch=4, classes=4, bins=31)

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.Space,
        size: str = "S",
        d_model: Optional[int] = None,
        d_state: Optional[int] = None,
        deter: Optional[int] = None,
        n_layer: Optional[int] = None,
        hidden: Optional[int] = None,
        layers: Optional[int] = None,
        depth: Optional[int] = None,
        kernel: Optional[str] = None,
        discretization: str = "zoh",
        conj_sym: bool = True,
        blocks: int = 8,
        s4d_init: str = "lin",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        glu: bool = True,
        prenorm: bool = False,
        stoch: int = 32,
        classes: int = 32,
        unimix: float = 0.01,
        free_nats: float = 1.0,
        kl_dyn: float = 0.5,
        kl_rep: float = 0.1,
        rec_scale: float = 1.0,
        rew_scale: float = 1.0,
        con_scale: float = 1.0,
        bins: int = 255,
        imglayers: int = 1,
        decoder_input: str = "features",
        seed: Optional[int] = None,  # accepted for the registry; WorldModel.from_config seeds the init
    ):
        super().__init__()
        who = self.name or "s5"
        kernel = kernel or self.default_kernel
        if size not in SIZES:
            raise UserError(f"model={who}: unknown size {size!r}; valid: {', '.join(SIZES)}")
        if kernel not in KERNELS:
            raise UserError(f"model.kernel={kernel!r}; valid: {', '.join(KERNELS)} (s5: MIMO S5; s4d: diagonal S4, what model=s4 selects)")
        if discretization not in DISCRETIZATIONS:
            raise UserError(f"model.discretization={discretization!r}; valid: {', '.join(DISCRETIZATIONS)}")
        if s4d_init not in S4D_INITS:
            raise UserError(f"model.s4d_init={s4d_init!r}; valid: {', '.join(S4D_INITS)} (S4D-Lin, S4D-Inv)")
        if decoder_input not in DECODER_INPUTS:
            raise UserError(f"model.decoder_input={decoder_input!r}; valid: {', '.join(DECODER_INPUTS)} (stoch: z alone; features: [h, z] as R2I)")
        if not 0 < dt_min <= dt_max:
            raise UserError(f"model.dt_min={dt_min}, model.dt_max={dt_max}; valid: 0 < dt_min <= dt_max (e.g. 0.001, 0.1)")
        p = SIZES[size]
        self.d_model = int(d_model or p["d_model"])
        self.d_state = int(d_state or (p["d_state"] if kernel == "s5" else S4D_STATE[size]))
        self.deter_dim = int(deter or p["deter"])
        self.n_layer = int(n_layer or p["n_layer"])
        self.hidden = int(hidden or p["hidden"])
        self.layers = int(layers if layers is not None else p["layers"])
        self.depth = int(depth or p["depth"])
        ints = dict(d_model=self.d_model, d_state=self.d_state, deter=self.deter_dim, n_layer=self.n_layer, hidden=self.hidden,
                    depth=self.depth, blocks=blocks, stoch=stoch, classes=classes)
        bad = {k: v for k, v in ints.items() if int(v) < 1}
        if bad or self.layers < 0 or imglayers < 0 or bins < 2 or not 0 <= unimix < 1:
            raise UserError(f"model={who}: bad sizes {bad or dict(layers=self.layers, imglayers=imglayers, bins=bins, unimix=unimix)}; "
                            "valid: d_model, d_state, deter, n_layer, hidden, depth, blocks, stoch, classes >= 1; "
                            "layers, imglayers >= 0; bins >= 2; 0 <= unimix < 1")
        self.kernel, self.discretization = kernel, discretization
        self.free_nats, self.kl_dyn, self.kl_rep = free_nats, kl_dyn, kl_rep
        self.rec_scale, self.rew_scale, self.con_scale = rec_scale, rew_scale, con_scale
        self.discrete, self.action_dim = action_spec(action_space, who)
        self.latent = CategoricalLatent(stoch, classes, unimix)
        self.stoch_dim = self.latent.dim
        self.feat_dim = self.deter_dim + self.stoch_dim
        Hd, L, D = self.hidden, max(1, self.layers), self.d_model

        self.encoder = ObsEncoder(obs_space, self.depth, Hd, L, who=who)
        self.decoder_input = decoder_input
        self.decoder = ObsDecoder(self.stoch_dim if decoder_input == "stoch" else self.feat_dim, obs_space, self.depth, Hd, L, who=who)
        self.post = nn.Linear(self.encoder.out_dim, self.stoch_dim)
        self.prior = dreamer_mlp(self.deter_dim, self.stoch_dim, Hd, imglayers)
        self.inp = norm_act_linear(self.stoch_dim + self.action_dim, D, bias=True)

        def ssm() -> nn.Module:
            if kernel == "s5":
                return S5SSM(D, self.d_state, int(blocks), bool(conj_sym), discretization, dt_min, dt_max)
            return S4DSSM(D, self.d_state, bool(conj_sym), discretization, dt_min, dt_max, s4d_init)

        self.blocks = nn.ModuleList([S5Block(ssm(), D, bool(glu), bool(prenorm)) for _ in range(self.n_layer)])
        self.out_proj = norm_act_linear(D, self.deter_dim, bias=True)
        self.n_states = self.blocks[0].ssm.state_size  # complex states per layer
        self.reward_head = RewardHead(self.feat_dim, Hd, L, bins)
        self.cont_head = ContinueHead(self.feat_dim, Hd, L)

    # ------------------------------------------------------------------------------------------ core
    def _unpack(self, ssm: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer complex states [Bt, S] of a flat real state batch [Bt, n_layer * 2 * S]."""
        s = ssm.float().reshape(ssm.shape[0], self.n_layer, 2, self.n_states)
        return [torch.complex(s[:, i, 0], s[:, i, 1]) for i in range(self.n_layer)]

    @staticmethod
    def _pack(states: list[torch.Tensor]) -> torch.Tensor:
        """Complex [*, S] per layer -> real [*, n_layer * 2 * S]."""
        return torch.cat([torch.cat([x.real, x.imag], -1) for x in states], -1)

    def core(self, tokens: torch.Tensor, reset: torch.Tensor, carry: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The stack over tokens [Bt, T, stoch + action] with resets [Bt, T] (state dropped before that token)
        from the incoming per-layer complex states: h [Bt, T, deter] and every layer's states [Bt, T, S]."""
        x = self.inp(tokens)
        states = []
        for blk, init in zip(self.blocks, carry):
            x, s = blk(x, reset, init)
            states.append(s)
        return self.out_proj(x), states

    def core_step(self, tokens: torch.Tensor, carry: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.inp(tokens)
        new = []
        for blk, s in zip(self.blocks, carry):
            x, s = blk.step(x, s)
            new.append(s)
        return self.out_proj(x), new

    def prior_logp(self, deter: torch.Tensor) -> torch.Tensor:
        return self.latent.mix(self.prior(deter))

    # ------------------------------------------------------------------------------------------ protocol
    def initial(self, batch_size: int) -> S5State:
        w = self.post.weight
        z = lambda d: torch.zeros(batch_size, d, device=w.device, dtype=torch.float32)  # noqa: E731
        return S5State(deter=z(self.deter_dim), stoch=z(self.stoch_dim), logits=z(self.stoch_dim), ssm=z(self.n_layer * 2 * self.n_states))

    def observe(self, obs: Any, action: torch.Tensor, is_first: torch.Tensor, state: Optional[S5State] = None,
                prev_action: Optional[torch.Tensor] = None) -> S5State:
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
        reset = torch.cat([torch.zeros_like(drop[:, :1]), drop[:, :-1]], 1)  # so the state is reset before the next token
        h, states = self.core(tokens, reset, self._unpack(state.ssm.reshape(B, -1)))
        keep = (~drop).to(h.dtype)[..., None]
        ssm = self._pack(states) * keep
        return S5State(deter=h * keep, stoch=z, logits=logp, ssm=ssm)

    def step(self, state: S5State, action: torch.Tensor) -> S5State:
        lead = state.deter.shape[:-1]
        flat = state.reshape(-1) if len(lead) != 1 else state
        a = self.action_input(action).reshape(flat.stoch.shape[0], -1)
        h, new = self.core_step(torch.cat([flat.stoch, a.to(flat.stoch.dtype)], -1), self._unpack(flat.ssm))
        logp = self.prior_logp(h)
        out = S5State(deter=h, stoch=self.latent.sample(logp), logits=logp, ssm=self._pack(new))
        return out.reshape(*lead) if len(lead) != 1 else out

    def features(self, state: S5State) -> torch.Tensor:
        return torch.cat([state.deter, state.stoch.to(state.deter.dtype)], -1)

    def reward(self, state: S5State) -> torch.Tensor:
        return self.reward_head.mean(self.features(state))

    def cont(self, state: S5State) -> torch.Tensor:
        return self.cont_head.prob(self.features(state))

    def _dec_in(self, state: S5State) -> torch.Tensor:
        return state.stoch if self.decoder_input == "stoch" else self.features(state)

    def decode(self, state: S5State) -> Any:
        return self.decoder.decode(self._dec_in(state))

    # ------------------------------------------------------------------------------------------ loss
    def backbone_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float], S5State]:
        """R2I's world-model loss on a [B, T] sequence batch; returns the posterior states (with their SSM
        states: every one is an imagination start)."""
        post = self.observe(batch["obs"], batch["action"], batch["is_first"])
        feat = self.features(post)
        rec = self.decoder.loss(self._dec_in(post), batch["obs"])
        total, metrics = latent_model_loss(self, post.logits, self.prior_logp(post.deter), feat, rec, batch)
        return total, metrics, post


@register("s4")
class S4(S5):
    """`model=s4`: the same world model with the diagonal S4 kernel (S4D) preselected."""

    default_kernel = "s4d"
    tiny = dict(S5.tiny, d_state=4, kernel="s4d")
