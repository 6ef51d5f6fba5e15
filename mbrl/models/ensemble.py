"""Probabilistic MLP ensemble (PETS / MBPO / MOPO backbone) behind the WorldModel protocol.

One network per member, all members evaluated in one batched matmul (`EnsembleLinear`: weights
[E, in, out], `torch.baddbmm`). Each member predicts a diagonal Gaussian over the normalised
targets [Δobs, reward] (log-variance soft-clamped between learned bounds, as in PETS / mbrl-lib)
Termination is learned by a separate classifier on the (predicted) next observation,
P(terminated | next_obs): a termination is a property of the state reached, which a small net
learns sharply from real next observations, and which then applies to every particle's sampled
next state. Inputs (obs, action) and targets are normalised with data statistics set at the start
of every `fit`.

Propagation of particles (`EnsembleState.member` holds each row's member, an index into the
elites):
- ``ts_inf``: every particle keeps its member for the whole rollout (PETS TS∞, mbrl-lib
  ``fixed_model``). `initial_members(B)` lays members out in contiguous blocks so that a step is
  a plain reshape to [K, B/K] (no gather).
- ``ts1``: a fresh balanced random assignment every step (PETS TS1).
- ``expectation``: every elite on every row; the next state is the mean of the members' means.

Uncertainty (`uncertainty(state, action, names)`, native signals, one forward pass over the elites):
`disagreement` [B] — the norm over obs dims of the std across elites of the predicted next-obs means
(in normalised units); `aleatoric` [B] — max over elites of the norm of the predicted std (MOPO's
penalty); `members` — every elite's mean next observation, reward and continue probability (MOBILE).

Fitting is generic (mbrl/algos/model_fit.py: hold-out split, per-member bootstrap and early stopping,
elites); this class supplies the hooks: `set_statistics` (normalisers), `member_scores`,
`member_parameters`, `select_elites`. The optimiser belongs to the algorithm.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from mbrl.data.batch import Batch
from mbrl.errors import UserError
from mbrl.models import register
from mbrl.models.base import Members, State, WorldModel, space_dims
from mbrl.models.dists import soft_clamp_logvar
from mbrl.models.nets import EnsembleLinear, ensemble_mlp, mlp

PROPAGATIONS = ("ts_inf", "ts1", "expectation")


@dataclass
class EnsembleState(State):
    """obs [B, D]; reward [B] and terminated [B] (probability) of the transition that arrived
    here; member [B] (long) index into the elites, used by TS1 / TS∞ propagation."""

    obs: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    member: torch.Tensor

    def event_dims_offset(self, name: str, value: torch.Tensor) -> int:
        return value.dim() - 1 if name == "obs" else value.dim()


class Normalizer(nn.Module):
    """Per-feature mean / std, set from data (kept in the state_dict). `const` marks the features
    that did not vary in that data (std < eps; their std is kept at 1)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("const", torch.zeros(dim, dtype=torch.bool))

    @torch.no_grad()
    def set(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        self.mean.copy_(x.mean(0))
        std = x.std(0, unbiased=False) if x.shape[0] > 1 else torch.ones_like(self.std)
        self.const.copy_(std < self.eps if x.shape[0] > 1 else torch.zeros_like(self.const))
        self.std.copy_(torch.where(std < self.eps, torch.ones_like(std), std))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # checkpoints from before `const`
        state_dict.setdefault(prefix + "const", torch.zeros_like(self.const))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return (x - self.mean) / self.std

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


def _layer_params(lin: EnsembleLinear, members: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of an EnsembleLinear for `members` (None: all)."""
    return (lin.weight, lin.bias) if members is None else (lin.weight[members], lin.bias[members])


CONST_LOGVAR = -40.0  # log-variance reported for constant targets (std 2e-9: no sampling noise)


@register("ensemble")
class EnsembleModel(WorldModel):
    default_algo = "pets"
    native_signals = frozenset({"disagreement", "aleatoric", "members"})
    markov_obs = True
    train_on = "transitions"
    tiny = dict(ensemble_size=3, num_elites=2, hidden=16, layers=2, term_hidden=8)

    def __init__(
        self,
        obs_space,
        action_space,
        ensemble_size: int = 5,
        num_elites: int = 5,
        hidden: int = 200,
        layers: int = 4,
        propagation: str = "ts_inf",
        learn_termination: bool = True,
        term_hidden: int = 64,
        weight_decay: float = 5e-5,
        logvar_bound_coef: float = 0.01,
        planning_dtype: str = "bfloat16",
        deterministic: bool = False,
        seed: Optional[int] = None,
    ):
        super().__init__()
        if propagation not in PROPAGATIONS:
            raise UserError(f"model.propagation={propagation!r}; valid: {', '.join(PROPAGATIONS)}")
        if not 1 <= num_elites <= ensemble_size:
            raise UserError(f"model.num_elites must be in [1, ensemble_size={ensemble_size}], got {num_elites}")
        if planning_dtype not in ("float32", "bfloat16"):
            raise UserError(f"model.planning_dtype must be 'float32' or 'bfloat16', got {planning_dtype!r}")
        obs_dim, action_dim, self.discrete = space_dims(obs_space, action_space, "ensemble")
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.feat_dim = obs_dim  # features(state) are the (predicted) observations
        self.ensemble_size, self.num_elites = ensemble_size, num_elites
        self.num_members = ensemble_size
        self.propagation = propagation
        self.learn_termination = learn_termination
        self.weight_decay, self.logvar_bound_coef = weight_decay, logvar_bound_coef
        self.planning_dtype = getattr(torch, planning_dtype)
        self.deterministic = deterministic
        self.target_dim = obs_dim + 1  # [Δobs, reward]
        in_dim = obs_dim + action_dim
        # hidden layers (`layers` of them) then one output layer: mean, logvar (the registry's
        # from_config draws the initial weights from the run's seed)
        self.net = ensemble_mlp(ensemble_size, in_dim, 2 * self.target_dim, hidden=hidden, layers=layers, act=nn.SiLU)
        self.term_net = mlp(obs_dim, 1, hidden=term_hidden, layers=2, act=nn.SiLU)
        self.linears = [m for m in self.net if isinstance(m, EnsembleLinear)]
        self.min_logvar = nn.Parameter(-10.0 * torch.ones(self.target_dim))
        self.max_logvar = nn.Parameter(0.5 * torch.ones(self.target_dim))
        self.in_norm = Normalizer(in_dim)
        self.target_norm = Normalizer(self.target_dim)
        self.register_buffer("elites", torch.arange(num_elites))
        self.generator: Optional[torch.Generator] = None
        if seed is not None:
            self.generator = torch.Generator().manual_seed(seed)
        self._planning = False
        self._folded_key: Optional[tuple] = None
        self._folded: list[torch.Tensor] = []
        self._act_buffers: dict[tuple, list] = {}

    # ------------------------------------------------------------------ raw network
    def _forward(self, x: torch.Tensor, members: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [K, N, in] normalised inputs for members `members` (None: all E) ->
        mean [K, N, T], logvar [K, N, T] (normalised target units)."""
        if self._planning and not torch.is_grad_enabled():
            h = self._forward_folded(x, members)
        else:
            h = x
            n = len(self.linears)
            for i, lin in enumerate(self.linears):
                w, b = _layer_params(lin, members)
                if h.dtype != w.dtype:
                    w, b = w.to(h.dtype), b.to(h.dtype)
                h = torch.baddbmm(b, h, w)
                if i < n - 1:
                    h = F.silu(h, inplace=not torch.is_grad_enabled())
        h = h.float()
        t = self.target_dim
        mean, logvar = h[..., :t], h[..., t : 2 * t]
        logvar = soft_clamp_logvar(logvar, self.min_logvar, self.max_logvar)
        const = self.target_norm.const
        if bool(const.any()):
            # a target that never varied in the training data (e.g. a reward of 1 on every step) is its
            # data mean, without noise, and takes no part in the loss: fitted as a Gaussian, it would
            # drive its log-variance to the lower bound and its ~e^10-weighted error would swamp the
            # shared layers' gradients (Adam scales by them), starving the dynamics targets
            mean = mean.masked_fill(const, 0.0)
            logvar = logvar.masked_fill(const, CONST_LOGVAR)
        return mean, logvar

    def _forward_folded(self, x: torch.Tensor, members: Optional[torch.Tensor]) -> torch.Tensor:
        """The no-grad planning forward, same result as the baddbmm path: each layer's bias is folded
        into its weight ([K, in+1, out], cached until the parameters change) and every hidden
        activation is written by SiLU into a reused [K, N, d+1] buffer whose last column is 1. On CPU
        this removes the broadcast-bias copy, the fresh allocation (page faults) and one read-write
        pass per layer: the planning forward is memory-bound, not matmul-bound."""
        version = (x.dtype, None if members is None else tuple(members.tolist()), tuple((p.data_ptr(), p._version) for p in self.net.parameters()))
        if self._folded_key != version:
            ws = []
            for lin in self.linears:
                w, b = _layer_params(lin, members)
                ws.append(torch.cat([w, b], 1).to(x.dtype).contiguous())
            self._folded_key, self._folded = version, ws
        k, n, d_in = x.shape
        bkey = (k, n, x.dtype, x.device)
        bufs = self._act_buffers.get(bkey)
        if bufs is None:
            dims = [d_in] + [w.shape[-1] for w in self._folded[:-1]]
            bufs = []
            for j, d in enumerate(dims):  # (input with its ones column, pre-activation) per layer
                buf = torch.empty(k, n, d + 1, dtype=x.dtype, device=x.device)
                buf[..., d] = 1
                bufs.append((buf, torch.empty(k, n, d, dtype=x.dtype, device=x.device) if j else None))
            if len(self._act_buffers) >= 8:  # a few shapes (iCEM's decaying population); drop the oldest
                self._act_buffers.pop(next(iter(self._act_buffers)))
            self._act_buffers[bkey] = bufs
        h = bufs[0][0]
        h[..., :d_in] = x
        for w, (nxt, pre) in zip(self._folded[:-1], bufs[1:]):
            torch.bmm(h, w, out=pre)
            torch.ops.aten.silu.out(pre, out=nxt[..., :-1])
            h = nxt
        return torch.bmm(h, self._folded[-1])  # a fresh tensor: callers keep views of the output

    def term_logit(self, next_obs: torch.Tensor) -> torch.Tensor:
        """Termination logit of reaching `next_obs` [..., D] -> [...]."""
        xn = (next_obs.float() - self.in_norm.mean[: self.obs_dim]) / self.in_norm.std[: self.obs_dim]
        return self.term_net(xn).squeeze(-1)

    def _inputs(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.in_norm(torch.cat([obs.float(), self.action_input(action)], -1))

    # ------------------------------------------------------------------ training
    def _targets(self, obs, action, next_obs, reward) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs.float(), self.action_input(action)], -1)
        y = torch.cat([next_obs.float() - obs.float(), reward.float().unsqueeze(-1)], -1)
        return x, y

    def _transition_loss(self, x: torch.Tensor, y: torch.Tensor, term: torch.Tensor, mask: Optional[torch.Tensor] = None):
        """x [E, N, in] / [N, in] raw inputs, y raw targets, term [.., N] float; -> loss, metrics."""
        xn, yn = self.in_norm(x), self.target_norm(y)
        if xn.dim() == 2:
            xn = xn.unsqueeze(0).expand(self.ensemble_size, *xn.shape)
            yn = yn.unsqueeze(0).expand(self.ensemble_size, *yn.shape)
        mean, logvar = self._forward(xn)
        keep = (~self.target_norm.const).float()  # constant targets take no part (see _forward)
        dims = keep.sum().clamp(min=1.0)
        nll = (((mean - yn) ** 2 * torch.exp(-logvar) + logvar) * keep).sum(-1) / dims  # [E, N]
        if self.learn_termination:
            next_obs = x[..., : self.obs_dim] + y[..., : self.obs_dim]
            bce = F.binary_cross_entropy_with_logits(self.term_logit(next_obs), term.float(), reduction="none").expand_as(nll)
        else:
            bce = torch.zeros_like(nll)
        if mask is not None:
            m = mask.float().expand_as(nll)
            denom = m.sum(-1).clamp(min=1.0)
            nll_m, bce_m = (nll * m).sum(-1) / denom, (bce * m).sum(-1) / denom
        else:
            nll_m, bce_m = nll.mean(-1), bce.mean(-1)
        loss = nll_m.sum() + bce_m.sum() + self.logvar_bound_coef * (self.max_logvar.sum() - self.min_logvar.sum())
        if self.weight_decay:
            loss = loss + self.weight_decay * sum((lin.weight**2).sum() for lin in self.linears) / 2
        with torch.no_grad():
            mse = ((mean - yn) ** 2 * keep).sum(-1) / dims
            mse = (mse * m).sum(-1) / denom if mask is not None else mse.mean(-1)
        return loss, {"model/nll": float(nll_m.detach().mean()), "model/term_bce": float(bce_m.detach().mean()), "model/mse": float(mse.mean())}

    def backbone_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float], EnsembleState]:
        """Transition batch with `next_obs`: rows [N] (every member sees every row) or per-member rows
        [E, N] (a bootstrap: member e trains on row set e); or a sequence batch [B, T] in the buffer's
        stream layout (transition t -> t+1 valid where not is_first[:, t+1]). Posterior states: the
        observations themselves."""
        post = self._state(batch.obs)
        if "next_obs" in batch:
            x, y = self._targets(batch.obs, batch.action, batch.next_obs, batch.reward)
            return (*self._transition_loss(x, y, batch.terminated), post)
        obs, act = batch.obs[:, :-1], batch.action[:, :-1]
        x, y = self._targets(obs, act, batch.obs[:, 1:], batch.reward[:, 1:])
        mask = ~batch.is_first[:, 1:].bool()
        d = x.shape[-1]
        return (*self._transition_loss(x.reshape(-1, d), y.reshape(-1, y.shape[-1]), batch.terminated[:, 1:].reshape(-1), mask.reshape(-1)), post)

    # ------------------------------------------------------------------ fitting hooks (mbrl/algos/model_fit.py)
    @torch.no_grad()
    def set_statistics(self, data: Batch) -> None:
        """Input and target normalisers from the training transitions [N]."""
        x, y = self._targets(data.obs, data.action, data.next_obs, data.reward)
        self.in_norm.set(x)
        self.target_norm.set(y)

    @torch.no_grad()
    def member_scores(self, data: Batch, chunk: int = 8192) -> torch.Tensor:
        """Per-member held-out score [E]: MSE of the mean in normalised target units."""
        dev = self.elites.device
        x, y = self._targets(data.obs.to(dev), data.action.to(dev), data.next_obs.to(dev), data.reward.to(dev))
        tot = torch.zeros(self.ensemble_size, device=dev)
        for s in range(0, x.shape[0], chunk):
            xn = self.in_norm(x[s : s + chunk]).unsqueeze(0).expand(self.ensemble_size, -1, -1)
            yn = self.target_norm(y[s : s + chunk])
            mean, _ = self._forward(xn)
            tot += ((mean - yn) ** 2).mean(-1).sum(-1)
        return tot / max(x.shape[0], 1)

    def member_parameters(self) -> list[torch.Tensor]:
        """The members' weights and biases (leading dim E)."""
        return [p for lin in self.linears for p in (lin.weight, lin.bias)]

    @torch.no_grad()
    def select_elites(self, scores: torch.Tensor) -> None:
        self.elites.copy_(torch.argsort(scores)[: self.num_elites].sort().values)

    # ------------------------------------------------------------------ WorldModel protocol
    def initial_members(self, batch_size: int, device=None) -> torch.Tensor:
        """Balanced member assignment in contiguous blocks (the fast TS∞ layout)."""
        k = self.num_elites
        return (torch.arange(batch_size, device=device) * k) // max(batch_size, 1)

    def _state(self, obs: torch.Tensor) -> EnsembleState:
        lead = obs.shape[:-1]
        z = torch.zeros(lead, device=obs.device)
        member = self.initial_members(int(math.prod(lead)), obs.device).reshape(lead)
        return EnsembleState(obs=obs.float(), reward=z, terminated=z.clone(), member=member)

    def observe(self, obs: Any, action: torch.Tensor, is_first: torch.Tensor, state: Optional[State] = None,
                prev_action: Optional[torch.Tensor] = None) -> EnsembleState:
        return self._state(obs)

    def initial(self, batch_size: int) -> EnsembleState:
        return self._state(torch.zeros(batch_size, self.obs_dim, device=self.elites.device))

    def repeat_particles(self, state: EnsembleState, n: int) -> EnsembleState:
        """n copies (copy-major) with members in contiguous TS∞ blocks over all rows: with particles as
        copies, each candidate sees every member equally often and a step needs no gather."""
        out = state.tile(n)
        out.member = self.initial_members(out.member.numel(), out.member.device).reshape(out.member.shape)
        return out

    @contextlib.contextmanager
    def inference(self):
        """Inside this context a no-grad `step` runs the folded planning kernel with its matmuls in
        `planning_dtype` (bf16 by default)."""
        prev = self._planning
        self._planning = True
        try:
            yield
        finally:
            self._planning = prev

    def _predict_rows(self, xn: torch.Tensor, member: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row with its own member (index into elites). xn [B, in] -> mean, logvar [B, T]."""
        B = xn.shape[0]
        K = self.num_elites
        elites = self.elites if K < self.ensemble_size else None
        if B % K == 0:
            blocked = self.initial_members(B, xn.device)
            if torch.equal(member, blocked):  # fast path: plain reshape
                mean, logvar = self._forward(xn.reshape(K, B // K, -1), elites)
                return mean.reshape(B, -1), logvar.reshape(B, -1)
            counts = torch.bincount(member, minlength=K)
            if bool((counts == B // K).all()):  # balanced: sort rows by member, reshape, unsort
                order = torch.argsort(member, stable=True)
                mean, logvar = self._forward(xn[order].reshape(K, B // K, -1), elites)
                inv = torch.empty_like(order)
                inv[order] = torch.arange(B, device=order.device)
                return mean.reshape(B, -1)[inv], logvar.reshape(B, -1)[inv]
        # unbalanced: every elite on every row, pick each row's member
        mean, logvar = self._forward(xn.unsqueeze(0).expand(K, -1, -1), elites)
        rows = torch.arange(B, device=xn.device)
        return mean[member, rows], logvar[member, rows]

    def step(self, state: EnsembleState, action: torch.Tensor) -> EnsembleState:
        lead = state.obs.shape[:-1]
        obs = state.obs.reshape(-1, self.obs_dim)
        act = action.reshape(-1, action.shape[-1])
        xn = self._inputs(obs, act)
        if self._planning and self.planning_dtype != torch.float32:
            xn = xn.to(self.planning_dtype)
        member = state.member.reshape(-1)
        if self.propagation == "expectation":
            mean, _ = self._forward(xn.unsqueeze(0).expand(self.num_elites, -1, -1), self.elites if self.num_elites < self.ensemble_size else None)
            y = mean.mean(0)
        else:
            if self.propagation == "ts1":
                B, K = member.numel(), self.num_elites
                perm = torch.randperm(B, generator=self.generator).to(xn.device)
                member = self.initial_members(B, xn.device)[perm] if B % K == 0 else torch.randint(K, (B,), generator=self.generator).to(xn.device)
            mean, logvar = self._predict_rows(xn, member)
            if self.deterministic:
                y = mean
            else:
                noise = torch.randn(mean.shape, generator=self.generator).to(mean.device) if self.generator is not None else torch.randn_like(mean)
                y = mean + torch.exp(0.5 * logvar) * noise
        y = self.target_norm.inverse(y)
        next_obs = obs + y[:, : self.obs_dim]
        reward = y[:, self.obs_dim]
        if self.learn_termination:
            low = self._planning and self.planning_dtype != torch.float32 and next_obs.device.type == "cpu"
            with torch.autocast("cpu", dtype=self.planning_dtype, enabled=low):
                term = torch.sigmoid(self.term_logit(next_obs)).float()
        else:
            term = torch.zeros_like(reward)
        return EnsembleState(
            obs=next_obs.reshape(*lead, self.obs_dim), reward=reward.reshape(lead), terminated=term.reshape(lead), member=member.reshape(lead)
        )

    def reward(self, state: EnsembleState) -> torch.Tensor:
        return state.reward

    def cont(self, state: EnsembleState) -> torch.Tensor:
        return 1.0 - state.terminated

    def features(self, state: EnsembleState) -> torch.Tensor:
        return state.obs

    @torch.no_grad()
    def native_uncertainty(self, state: EnsembleState, action: torch.Tensor, names) -> dict[str, Any]:
        """From one forward pass over the elites: `disagreement` (std across elites of the predicted
        next-obs means, norm over dims, normalised units) [B], `aleatoric` (max over elites of the norm
        of the predicted std) [B], `members` (each elite's mean next obs, reward, continue prob)."""
        lead = state.obs.shape[:-1]
        xn = self._inputs(state.obs.reshape(-1, self.obs_dim), action.reshape(-1, action.shape[-1]))
        K = self.num_elites
        mean, logvar = self._forward(xn.unsqueeze(0).expand(K, -1, -1), self.elites if K < self.ensemble_size else None)
        d = self.obs_dim
        out: dict[str, Any] = {}
        for name in names:
            if name == "disagreement":
                dis = mean[..., :d].std(0, unbiased=False).norm(dim=-1) if K > 1 else torch.zeros(mean.shape[1], device=mean.device)
                out[name] = dis.reshape(lead)
            elif name == "aleatoric":
                out[name] = torch.exp(0.5 * logvar[..., :d]).norm(dim=-1).amax(0).reshape(lead)
            elif name == "members":
                y = self.target_norm.inverse(mean)
                nxt = state.obs.reshape(1, -1, d).float() + y[..., :d]
                cont = 1.0 - torch.sigmoid(self.term_logit(nxt)).float() if self.learn_termination else torch.ones_like(y[..., d])
                out[name] = Members(features=nxt.reshape(K, *lead, d), reward=y[..., d].reshape(K, *lead), cont=cont.reshape(K, *lead))
        return out

    def get_extra_state(self) -> dict:
        """The sampling generator's state (TS1 assignments, particle noise): a resumed run continues it."""
        return {"generator": self.generator.get_state()} if self.generator is not None else {}

    def set_extra_state(self, state: dict) -> None:
        if self.generator is not None and state and "generator" in state:
            self.generator.set_state(state["generator"])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "_optimizer", None)  # checkpoints from when the model held its optimiser
        state_dict.setdefault(prefix + "_extra_state", {})  # ... and from before the generator was saved
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
