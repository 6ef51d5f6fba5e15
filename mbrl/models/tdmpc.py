"""TD-MPC2's implicit, decoder-free world model (Hansen, Su, Wang, ICLR 2024, arXiv:2310.16828;
reference code github.com/nicklashansen/tdmpc2, `tdmpc2/common/world_model.py`, `tdmpc2/tdmpc2.py`,
`tdmpc2/config.yaml`). `model=tdmpc` (algo=tdmpc2 is implied: MPPI with the policy prior).

What makes it TD-MPC2 (each point cites the reference):
- encoder -> latent z normalised by SimNorm: softmax over groups of 8 (`simnorm_dim: 8`, layers.SimNorm);
  vectors through an MLP (`num_enc_layers`, `enc_dim`), pixels through the shared CNN (parts.ObsEncoder)
  with random-shift augmentation while training (layers.ShiftAug, pad 4... the reference pads 3);
- latent dynamics d(z, a), reward R(z, a), termination on z', a tanh-Gaussian policy prior pi(z) and
  an ensemble of `num_q` Q(z, a) heads: MLPs of two `mlp_dim` layers with LayerNorm + Mish
  (layers.NormedLinear); dropout 0.01 on the Q-heads' first layer (`dropout: 0.01`); reward and Q
  output layers zero-initialised, all other linears trunc-normal(0.02) (init.weight_init);
- reward and Q as discrete regression: two-hot of symlog(x) over 101 bins linear in [-10, 10]
  (`num_bins: 101, vmin: -10, vmax: 10`; math.two_hot / two_hot_inv) - dists.TwoHot with the symlog
  transform;
- the loss over a horizon of 3 with rho = 0.5 (`horizon: 3, rho: 0.5`): latent consistency
  ||d(z_t, a_t) - sg(enc(o_{t+1}))||^2 (TD-MPC2's "target" latent is the stop-gradient of the online
  encoder; TD-MPC v1 kept a separate target encoder), reward and value cross-entropies, TD targets
  r + gamma (1 - term) min of 2 of the `num_q` target Q-heads at (z', pi(z')) (`Q(..., 'min',
  target=True)`), coefficients consistency 20, reward 0.1, value 0.1, termination 1;
- the policy loss: -(entropy_coef * scaled entropy + Q_avg / S) with Q from 2 random heads whose
  weights are detached, S a running 5-95 percentile range (common/scale.py, lerp tau), entropy scaled
  by the action dims (`entropy_coef: 1e-4`, WorldModel.pi), log-std in [-10, 2];
- the target Q-heads move only by Polyak averaging, tau = 0.01 (`tau: 0.01`, soft_update_target_Q):
  here the step happens at the start of every training `loss` call, i.e. once per gradient update.
Size presets are the reference's MODEL_SIZE table (1 / 5 / 19 / 48 / 317 M parameters; the 1M preset has
2 Q-heads, 317M 8). Optimiser settings (lr 3e-4, encoder lr scale 0.3, grad clip 20, batch 256) belong
to the algorithm (mbrl/algos/tdmpc2.py).

Protocol mapping: a state is (z, r) with r the predicted reward of the step that arrived at z (zero for
encoded observations); `observe` encodes each observation on its own (the latent is Markov given the
observation, so `is_first` needs no reset); `step` = dynamics + reward; `cont` = 1 - termination(z);
`features` = z. On top of the protocol: `pi`, `Q`, `value` (Q(z, pi(z)) for planners' terminal value),
`policy_prior = True`, `param_groups` (encoder / policy / rest for the algorithm's optimisers).
Discrete actions are refused: the policy prior is a tanh-Gaussian.
"""
from __future__ import annotations

import copy
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
from mbrl.models.dists import TwoHot, symexp, symlog
from mbrl.models.nets import EnsembleLinear, dreamer_mlp, scale_init_
from mbrl.models.parts import ContinueHead, ObsEncoder, action_spec

#: reference common/__init__.py MODEL_SIZE (keys: millions of parameters)
SIZES: dict[str, dict[str, int]] = {
    "1": dict(enc_dim=256, mlp_dim=384, latent_dim=128, enc_layers=2, num_q=2),
    "5": dict(enc_dim=256, mlp_dim=512, latent_dim=512, enc_layers=2, num_q=5),
    "19": dict(enc_dim=1024, mlp_dim=1024, latent_dim=768, enc_layers=3, num_q=5),
    "48": dict(enc_dim=1792, mlp_dim=1792, latent_dim=768, enc_layers=4, num_q=5),
    "317": dict(enc_dim=4096, mlp_dim=4096, latent_dim=1376, enc_layers=5, num_q=8),
}


def simnorm(x: torch.Tensor, group: int = 8) -> torch.Tensor:
    """SimNorm (Lavoie et al. 2022, TD-MPC2 sec. 3): softmax over consecutive groups of `group` units."""
    shp = x.shape
    return torch.softmax(x.reshape(*shp[:-1], shp[-1] // group, group), -1).reshape(shp)


class SimNorm(nn.Module):
    def __init__(self, group: int = 8):
        super().__init__()
        self.group = int(group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return simnorm(x, self.group)


def to_latent(in_dim: int, latent_dim: int, group: int) -> nn.Sequential:
    """The last layer of encoder and dynamics: Linear -> LayerNorm -> SimNorm (reference mlp(..., act=SimNorm))."""
    return nn.Sequential(nn.Linear(in_dim, latent_dim), nn.LayerNorm(latent_dim), SimNorm(group))


def mish_mlp(in_dim: int, out_dim: Optional[int], units: int, layers: int = 2, out_scale: float = 1.0) -> nn.Sequential:
    """TD-MPC2's MLP: `layers` x (Linear, LayerNorm, Mish) then a Linear head (the shared dreamer_mlp with Mish)."""
    return dreamer_mlp(in_dim, out_dim, units, layers, act=nn.Mish, out_scale=out_scale)


def random_shift(x: torch.Tensor, pad: int = 4, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """DrQ random shift (reference layers.ShiftAug, pad 3 for 64x64; DrQ-v2 pads 4): replicate-pad by `pad`
    and crop back at a random integer offset per image, by bilinear resampling of a shifted grid.
    [N, C, H, W] float -> same."""
    n, _, h, w = x.shape
    x = F.pad(x, (pad,) * 4, mode="replicate")
    eps = 1.0 / (h + 2 * pad)
    ar = torch.linspace(-1.0 + eps, 1.0 - eps, h + 2 * pad, device=x.device, dtype=x.dtype)[:h]
    base = torch.stack([ar.unsqueeze(0).expand(h, h), ar.unsqueeze(1).expand(h, h)], -1)  # [H, W, 2] (x, y)
    shift = torch.randint(0, 2 * pad + 1, (n, 1, 1, 2), device=x.device, generator=generator).to(x.dtype) * (2.0 / (h + 2 * pad))
    return F.grid_sample(x, base.unsqueeze(0) + shift, padding_mode="zeros", align_corners=False)


class QEnsemble(nn.Module):
    """`num_q` Q-heads in one batched matmul per layer: [N, in] -> logits [K, N, bins]. Dropout after the
    first linear (reference mlp(..., dropout=0.01): NormedLinear applies it before LayerNorm + Mish)."""

    def __init__(self, num_q: int, in_dim: int, units: int, bins: int, dropout: float):
        super().__init__()
        self.num_q = int(num_q)
        self.l1, self.l2, self.out = EnsembleLinear(num_q, in_dim, units), EnsembleLinear(num_q, units, units), EnsembleLinear(num_q, units, bins)
        self.n1, self.n2 = nn.LayerNorm(units), nn.LayerNorm(units)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.mish(self.n1(self.drop(self.l1(x))))
        h = F.mish(self.n2(self.l2(h)))
        return self.out(h)


@dataclass
class TDState(State):
    z: torch.Tensor  # [*, latent_dim] SimNorm latent
    r: torch.Tensor  # [*] predicted reward of the step that arrived here (0 for encoded observations)

    def event_dims_offset(self, name: str, value: torch.Tensor) -> int:
        return value.dim() - (1 if name == "z" else 0)


@register("tdmpc")
class TDMPC(WorldModel):
    default_algo = "tdmpc2"
    has_decoder = False
    native_signals = frozenset()
    markov_obs = False
    differentiable_step = True
    train_on = "sequences"
    #: the policy prior and Q-heads that algo=tdmpc2 plans with (`pi`, `Q`, `value`)
    policy_prior = True
    tiny = dict(size="1", enc_dim=16, mlp_dim=16, latent_dim=16, enc_layers=1, num_q=2, bins=11, depth=4)

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.Space,
        size: Any = "5",
        enc_dim: Optional[int] = None,
        mlp_dim: Optional[int] = None,
        latent_dim: Optional[int] = None,
        enc_layers: Optional[int] = None,
        num_q: Optional[int] = None,
        simnorm_dim: int = 8,
        depth: int = 32,
        bins: int = 101,
        vmin: float = -10.0,
        vmax: float = 10.0,
        dropout: float = 0.01,
        horizon: int = 3,
        rho: float = 0.5,
        consistency_coef: float = 20.0,
        reward_coef: float = 0.1,
        value_coef: float = 0.1,
        termination_coef: float = 1.0,
        entropy_coef: float = 1e-4,
        log_std_min: float = -10.0,
        log_std_max: float = 2.0,
        tau: float = 0.01,
        discount: Optional[float] = None,
        shift_pad: int = 4,
        seed: Optional[int] = None,
    ):
        super().__init__()
        size = str(size)
        if size not in SIZES:
            raise UserError(f"model=tdmpc: unknown size {size!r}; valid: {', '.join(SIZES)} (millions of parameters)")
        discrete, self.action_dim = action_spec(action_space, "tdmpc")
        if discrete:
            raise UserError(f"model=tdmpc needs continuous actions (a 1-D Box): its policy prior is a tanh-Gaussian; got {action_space}. Valid for discrete actions: model=rssm")
        p = SIZES[size]
        self.enc_dim, self.mlp_dim = int(enc_dim or p["enc_dim"]), int(mlp_dim or p["mlp_dim"])
        self.latent_dim, self.enc_layers = int(latent_dim or p["latent_dim"]), int(enc_layers or p["enc_layers"])
        self.num_q = int(num_q or p["num_q"])
        if self.latent_dim % simnorm_dim or self.num_q < 2 or bins < 2 or not 0 < rho <= 1 or not 0 < tau <= 1 or horizon < 1:
            raise UserError(f"model=tdmpc: latent_dim={self.latent_dim}, simnorm_dim={simnorm_dim}, num_q={self.num_q}, bins={bins}, rho={rho}, "
                            f"tau={tau}, horizon={horizon}; valid: latent_dim divisible by simnorm_dim, num_q >= 2, bins >= 2, 0 < rho <= 1, 0 < tau <= 1, horizon >= 1")
        self.group, self.horizon, self.rho, self.tau = int(simnorm_dim), int(horizon), float(rho), float(tau)
        self.coef = dict(consistency=float(consistency_coef), reward=float(reward_coef), value=float(value_coef), termination=float(termination_coef))
        self.entropy_coef, self.log_std_min, self.log_std_max = float(entropy_coef), float(log_std_min), float(log_std_max)
        #: TD discount; None until the algorithm sets it from the episode length (0.99 meanwhile)
        self.discount = None if discount is None else float(discount)
        self.shift_pad = int(shift_pad)
        self.feat_dim = L = self.latent_dim
        A, M = self.action_dim, self.mlp_dim

        # encoder: the shared ObsEncoder (vectors: `enc_layers - 1` hidden layers, as the reference's
        # max(num_enc_layers - 1, 1) x enc_dim; pixels: the shared CNN), then Linear -> LayerNorm -> SimNorm
        self.encoder = ObsEncoder(obs_space, int(depth), self.enc_dim, max(self.enc_layers - 1, 1), who="tdmpc")
        self.pixels = bool(self.encoder.layout.img_keys)
        self.enc_out = to_latent(self.encoder.out_dim, L, self.group)
        self.dynamics = nn.Sequential(mish_mlp(L + A, None, M, 2), to_latent(M, L, self.group))
        self.reward_net = mish_mlp(L + A, bins, M, 2, out_scale=0.0)
        self.term_head = ContinueHead(L, M, 2)
        self.pi_net = mish_mlp(L, 2 * A, M, 2)
        self.qs = QEnsemble(self.num_q, L + A, M, bins, dropout)
        self.apply(_trunc_normal_init)
        scale_init_(self.reward_net[-1], 0.0)
        with torch.no_grad():
            self.qs.out.weight.zero_()
        self.target_qs = copy.deepcopy(self.qs).requires_grad_(False)
        self.target_qs.eval()
        self.register_buffer("bins", torch.linspace(float(vmin), float(vmax), int(bins)), persistent=False)
        # running 5-95 percentile range of Q for the policy loss (reference common/scale.py)
        self.register_buffer("q_scale", torch.ones(()))

    # ------------------------------------------------------------------ pieces
    def train(self, mode: bool = True) -> "TDMPC":
        super().train(mode)
        self.target_qs.train(False)  # the targets never use dropout (reference WorldModel.train)
        return self

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """encoder (reference lr x enc_lr_scale), policy (its own optimiser) and the rest."""
        enc = list(self.encoder.parameters()) + list(self.enc_out.parameters())
        pi = list(self.pi_net.parameters())
        ids = {id(p) for p in enc + pi}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        return {"encoder": enc, "pi": pi, "rest": rest}

    def twohot(self, logits: torch.Tensor) -> TwoHot:
        return TwoHot(logits, self.bins, transform=symlog, inverse=symexp)

    def encode(self, obs: Any, lead: int = 2, augment: bool = False) -> torch.Tensor:
        if augment and self.pixels and self.shift_pad > 0:
            obs = self._augment(obs, lead)
        return self.enc_out(self.encoder(obs, lead=lead))

    def _augment(self, obs: Any, lead: int) -> Any:
        lay = self.encoder.layout

        def shift(img: torch.Tensor) -> torch.Tensor:
            x = img.float() if img.dtype != torch.uint8 else img.float() / 255.0 - 0.5
            flat = x.reshape(-1, *x.shape[lead:])
            return random_shift(flat, self.shift_pad).reshape(x.shape)

        if not lay.dict_obs:
            return shift(obs)
        return {k: (shift(v) if k in lay.img_keys else v) for k, v in obs.items()}

    def next(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.dynamics(torch.cat([z, a], -1))

    def reward_logits(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.reward_net(torch.cat([z, a], -1))

    def pi(self, z: torch.Tensor, explore: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Tanh-Gaussian policy prior (reference WorldModel.pi): action [*, A] (the mean when not
        `explore`) and info with entropy and the action-dims-scaled entropy of the policy loss."""
        mean, log_std = self.pi_net(z).float().chunk(2, -1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(log_std) + 1)
        eps = torch.randn_like(mean)
        log_prob = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        scaled_log_prob = log_prob * eps.shape[-1]  # "scale log probability by action dimensions"
        action = torch.tanh(mean + eps * log_std.exp())
        log_prob = log_prob - torch.log(F.relu(1 - action.pow(2)) + 1e-6).sum(-1)
        entropy_scale = scaled_log_prob / (log_prob + 1e-8)
        info = {"mean": torch.tanh(mean), "entropy": -log_prob, "scaled_entropy": -log_prob * entropy_scale}
        return (action if explore else info["mean"]), info

    def pi_action(self, z: torch.Tensor) -> torch.Tensor:
        """A policy prior sample (features -> action; what planners' proposals and `imagine` use)."""
        return self.pi(z)[0]

    def q_logits(self, z: torch.Tensor, a: torch.Tensor, target: bool = False, detach: bool = False) -> torch.Tensor:
        """Logits [K, *, bins] of every Q-head (the target heads, or the online ones with detached weights)."""
        x = torch.cat([z, a], -1)
        lead = x.shape[:-1]
        flat = x.reshape(-1, x.shape[-1])
        if target:
            out = self.target_qs(flat)
        elif detach:
            out = torch.func.functional_call(self.qs, {n: p.detach() for n, p in self.qs.named_parameters()}, (flat,))
        else:
            out = self.qs(flat)
        return out.reshape(self.num_q, *lead, -1)

    def Q(self, z: torch.Tensor, a: torch.Tensor, kind: str = "avg", target: bool = False, detach: bool = False) -> torch.Tensor:
        """Q(z, a) [*]: the min or mean of 2 randomly chosen heads (reference return_type 'min' / 'avg')."""
        logits = self.q_logits(z, a, target=target, detach=detach)
        idx = torch.randperm(self.num_q, device=logits.device)[:2]
        q = self.twohot(logits[idx]).mean()
        return q.min(0).values if kind == "min" else q.mean(0)

    def value(self, z: torch.Tensor) -> torch.Tensor:
        """Terminal value Q(z, pi(z)) [*] (reference _estimate_value: 'avg' of 2 heads)."""
        return self.Q(z, self.pi_action(z), "avg")

    @torch.no_grad()
    def polyak(self) -> None:
        """target <- (1 - tau) target + tau online, for every Q-head parameter."""
        for t, p in zip(self.target_qs.parameters(), self.qs.parameters()):
            t.lerp_(p, self.tau)

    # ------------------------------------------------------------------ protocol
    def initial(self, batch_size: int) -> TDState:
        dev = self.bins.device
        return TDState(z=torch.full((batch_size, self.latent_dim), 1.0 / self.group, device=dev), r=torch.zeros(batch_size, device=dev))

    def observe(self, obs: Any, action: torch.Tensor, is_first: torch.Tensor, state: Optional[TDState] = None,
                prev_action: Optional[torch.Tensor] = None) -> TDState:
        z = self.encode(obs, lead=2)
        return TDState(z=z, r=torch.zeros(z.shape[:-1], device=z.device))

    def step(self, state: TDState, action: torch.Tensor) -> TDState:
        a = self.action_input(action).to(state.z.dtype)
        return TDState(z=self.next(state.z, a), r=self.twohot(self.reward_logits(state.z, a)).mean())

    def features(self, state: TDState) -> torch.Tensor:
        return state.z

    def reward(self, state: TDState) -> torch.Tensor:
        return state.r

    def cont(self, state: TDState) -> torch.Tensor:
        return self.term_head.prob(state.z)

    # ------------------------------------------------------------------ loss
    def backbone_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float], TDState]:
        """TD-MPC2's update on a [B, T] sequence batch (buffer stream layout): every window of H + 1 steps
        (H = min(horizon, T - 1); a [256, 4] batch is the reference's) is one rollout of the dynamics from
        the encoded first observation. Steps after an episode start inside a window are masked."""
        if torch.is_grad_enabled() and self.training:
            self.polyak()  # once per gradient update (the reference updates after each optimiser step)
        obs, is_first = batch["obs"], batch["is_first"].bool()
        B, T = is_first.shape[:2]
        if T < 2:
            raise UserError(f"model=tdmpc trains on sequences of length >= 2; got T={T}. Valid: e.g. a [256, {self.horizon + 1}] batch")
        H = min(self.horizon, T - 1)
        W = T - H  # windows per sequence
        z_all = self.encode(obs, lead=2, augment=self.training)  # [B, T, L]
        act = self.action_input(batch["action"]).to(z_all.dtype)
        rew, term = batch["reward"].float(), batch["terminated"].float()

        def win(x: torch.Tensor) -> torch.Tensor:
            """[B, T, *] -> [H + 1, B * W, *]: step k of window s is time s + k."""
            u = x.unfold(1, H + 1, 1)  # [B, W, *, H + 1]
            u = u.movedim(-1, 0)  # [H + 1, B, W, *]
            return u.reshape(H + 1, B * W, *x.shape[2:])

        zw, aw, rw, tw = win(z_all), win(act), win(rew), win(term)
        firsts = win(is_first.float())
        valid = torch.cumprod(1.0 - firsts[1:], 0)  # [H, N]: transition k -> k+1 lies inside one episode
        targets = zw[1:].detach()
        N = zw.shape[1]
        with torch.no_grad():
            nxt_a = self.pi_action(targets)
            disc = 0.99 if self.discount is None else self.discount
            td = rw[1:] + disc * (1.0 - tw[1:]) * self.Q(targets, nxt_a, "min", target=True)  # [H, N]
        rho = self.rho ** torch.arange(H, device=z_all.device, dtype=torch.float32)
        z = zw[0]
        zs = [z]
        cons = []
        for k in range(H):
            z = self.next(z, aw[k])
            zs.append(z)
            cons.append((z.float() - targets[k].float()).pow(2).mean(-1))
        zs_t = torch.stack(zs)  # [H + 1, N, L]
        cons_t = torch.stack(cons)  # [H, N]
        rew_logits = self.reward_logits(zs_t[:-1], aw[:H])
        rew_loss = self.twohot(rew_logits).loss(rw[1:])  # [H, N]
        q_logits = self.q_logits(zs_t[:-1], aw[:H])  # [K, H, N, bins]
        val_loss = self.twohot(q_logits).loss(td.unsqueeze(0).expand(self.num_q, H, N)).mean(0)  # [H, N]
        term_loss = self.term_head.loss(zs_t[1:], 1.0 - tw[1:])  # BCE against the continue flag [H, N]

        def masked(x: torch.Tensor) -> torch.Tensor:
            """Σ_k rho^k · mean over valid rows of x[k], / H (the reference's normalisation)."""
            per_k = (x * valid).sum(-1) / valid.sum(-1).clamp_min(1.0)
            return (rho * per_k).sum() / H

        consistency, reward_l, value_l = masked(cons_t), masked(rew_loss), masked(val_loss)
        termination = (term_loss * valid).sum() / valid.sum().clamp_min(1.0)
        c = self.coef
        model_loss = c["consistency"] * consistency + c["reward"] * reward_l + c["termination"] * termination + c["value"] * value_l

        # policy prior (reference update_pi): on the detached rollout latents; Q-heads detached
        zd = zs_t.detach()
        a_pi, info = self.pi(zd)
        q = self.Q(zd, a_pi, "avg", detach=True)  # [H + 1, N]
        if torch.is_grad_enabled() and self.training:
            with torch.no_grad():
                lo, hi = torch.quantile(q[0].float(), torch.tensor([0.05, 0.95], device=q.device))
                self.q_scale.lerp_(torch.clamp(hi - lo, min=1.0), self.tau)
        alive = torch.cat([torch.ones_like(valid[:1]), valid], 0)  # [H + 1, N]
        rho_pi = self.rho ** torch.arange(H + 1, device=q.device, dtype=torch.float32)
        per = -(self.entropy_coef * info["scaled_entropy"] + q / self.q_scale)
        pi_loss = (rho_pi * (per * alive).sum(-1) / alive.sum(-1).clamp_min(1.0)).mean()
        total = model_loss + pi_loss
        with torch.no_grad():
            metrics = {"wm/loss": model_loss, "wm/consistency": consistency, "wm/rew": reward_l, "wm/value": value_l, "wm/termination": termination,
                       "pi/loss": pi_loss, "pi/entropy": info["entropy"].mean(), "pi/scale": self.q_scale, "q/mean": q[0].mean(), "q/td": td.mean()}
            vals = torch.stack([v.detach().float() for v in metrics.values()]).tolist()
        post = TDState(z=z_all, r=torch.zeros(B, T, device=z_all.device))
        return total, dict(zip(metrics.keys(), vals)), post


def _trunc_normal_init(m: nn.Module) -> None:
    """Reference init.weight_init: linear weights trunc-normal(std 0.02), biases 0."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, EnsembleLinear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)
