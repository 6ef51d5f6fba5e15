"""Actor-critic learned in imagination (DreamerV3, arXiv:2301.04104 sec. "Actor critic learning";
reference github.com/danijar/dreamerv3 `agent.py: imag_loss`, `configs.yaml: agent.*`).

Uses only the WorldModel protocol (`imagine`, i.e. `step / reward / cont / features`), so any
backbone plugs in:
- imagination from posterior start states over `horizon` steps (`imag_length: 15`);
- lambda-returns R_t = r_{t+1} + gamma c_{t+1} ((1 - lam) v_{t+1} + lam R_{t+1}), R_H = v_H with
  `lam: 0.95`, gamma = 1 - 1/`horizon: 333` (~0.997) and the continue head c;
- trajectory weights cumprod(gamma * c) (`weight = cumprod(disc * con) / disc`);
- critic: two-hot over symexp bins (`value: output: symexp_twohot, outscale: 0.0`) regressing the
  returns, plus a regulariser towards a slow EMA critic (`slowreg: 1.0`, `slowvalue.rate: 0.02`);
- actor: advantages (R - v) / max(1, S) where S is an EMA (`retnorm.rate: 0.01`) of the 95th minus
  5th percentile of the returns (`retnorm: {impl: perc, perclo: 5, perchi: 95, limit: 1.0}`);
  entropy bonus `actent: 3e-4`; discrete actions: categorical with 1% unimix and REINFORCE
  gradients; continuous actions: bounded normal (`minstd 0.1, maxstd 1.0`) trained by backprop
  through the model's dynamics (paper v1; `actor_grad: reinforce` gives the newer reference's
  REINFORCE-for-everything).
"""
from __future__ import annotations

import copy
import math
from typing import Any, Iterable, Optional

import gymnasium as gym
import torch
from torch import nn

from mbrl.data.batch import Batch
from mbrl.learners.base import Learner, frozen
from mbrl.models.base import State, WorldModel
from mbrl.models.dists import BoundedNormal, OneHotCategorical, TwoHot, symexp_bins, unimix_logits
from mbrl.models.nets import dreamer_mlp


class ConfigError(ValueError):
    pass


# ----------------------------------------------------------------------------------------------
# optimisers shared with the dreamer algo


class LaProp(torch.optim.Optimizer):
    """LaProp (Ziyin et al. 2020): Adam with the momentum taken after normalisation; the newer
    DreamerV3 reference's optimiser (`opt: {momentum: True, beta1: 0.9, beta2: 0.999, eps: 1e-20}`)."""

    def __init__(self, params: Iterable, lr: float = 4e-5, betas=(0.9, 0.999), eps: float = 1e-20):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["v"] = torch.zeros_like(p)
                    st["m"] = torch.zeros_like(p)
                st["step"] += 1
                t = st["step"]
                st["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                vhat = st["v"] / (1 - b2**t)
                st["m"].mul_(b1).add_(p.grad / (vhat.sqrt() + group["eps"]), alpha=1 - b1)
                p.add_(st["m"], alpha=-group["lr"] / (1 - b1**t))


class Optim:
    """One optimiser with gradient clipping: `clip` (global norm, DreamerV3 paper v1: 1000 for the
    world model, 100 for actor and critic) or `agc` (adaptive per-parameter clipping relative to the
    parameter norm, newer reference `opt.agc: 0.3`)."""

    def __init__(self, params: Iterable[nn.Parameter], kind: str = "adam", lr: float = 1e-4, eps: float = 1e-8,
                 clip: float = 0.0, agc: float = 0.0, warmup: int = 0):
        self.params = [p for p in params if p.requires_grad]
        if kind == "adam":
            self.opt: torch.optim.Optimizer = torch.optim.Adam(self.params, lr=lr, eps=eps)
        elif kind == "laprop":
            self.opt = LaProp(self.params, lr=lr, eps=eps)
        else:
            raise ConfigError(f"unknown optimizer {kind!r}; valid: adam, laprop")
        self.lr, self.clip, self.agc, self.warmup = lr, clip, agc, warmup
        self.steps = 0

    def step(self, loss: torch.Tensor) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) if grads else torch.zeros(())
        if self.agc > 0:
            with torch.no_grad():
                for p in self.params:
                    if p.grad is None:
                        continue
                    pn = torch.linalg.vector_norm(p).clamp_min(1e-3)
                    gn = torch.linalg.vector_norm(p.grad).clamp_min(1e-12)
                    p.grad.mul_(torch.clamp(self.agc * pn / gn, max=1.0))
        elif self.clip > 0 and grads:
            torch._foreach_mul_(grads, torch.clamp(self.clip / (norm + 1e-6), max=1.0))
        if self.warmup:
            for g in self.opt.param_groups:
                g["lr"] = self.lr * min(1.0, (self.steps + 1) / self.warmup)
        self.opt.step()
        self.steps += 1
        return float(norm)

    def state_dict(self) -> dict:
        return {"opt": self.opt.state_dict(), "steps": self.steps}

    def load_state_dict(self, sd: dict) -> None:
        self.opt.load_state_dict(sd["opt"])
        self.steps = sd["steps"]


# ----------------------------------------------------------------------------------------------


def lambda_returns(rewards: torch.Tensor, conts: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """rewards, conts [H, B] (of the transitions into states 1..H), values [H+1, B] -> returns [H, B]."""
    H = rewards.shape[0]
    out = []
    last = values[-1]
    for t in range(H - 1, -1, -1):
        last = rewards[t] + gamma * conts[t] * ((1 - lam) * values[t + 1] + lam * last)
        out.append(last)
    return torch.stack(out[::-1])


class ActorCritic(Learner):
    def __init__(
        self,
        feat_dim: int,
        action_space: gym.Space,
        units: int = 512,
        layers: int = 2,
        horizon: int = 15,
        gamma: float = 1 - 1 / 333,
        lam: float = 0.95,
        actent: float = 3e-4,
        slowreg: float = 1.0,
        slow_rate: float = 0.02,
        retnorm_rate: float = 0.01,
        retnorm_limit: float = 1.0,
        perclo: float = 5.0,
        perchi: float = 95.0,
        unimix: float = 0.01,
        minstd: float = 0.1,
        maxstd: float = 1.0,
        actor_grad: str = "auto",
        bins: int = 255,
        actor_opt: Optional[dict] = None,
        critic_opt: Optional[dict] = None,
    ):
        super().__init__()
        if isinstance(action_space, gym.spaces.Discrete):
            self.discrete, self.action_dim = True, int(action_space.n)
        elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
            self.discrete, self.action_dim = False, int(action_space.shape[0])
        else:
            raise ConfigError(f"actor_critic: action space {action_space}; valid: Discrete(n) or a 1-D Box")
        if actor_grad not in ("auto", "reinforce", "dynamics"):
            raise ConfigError(f"actor_critic: actor_grad={actor_grad!r}; valid: auto, reinforce, dynamics")
        if actor_grad == "dynamics" and self.discrete:
            raise ConfigError("actor_critic: actor_grad=dynamics needs continuous actions; valid for discrete: auto, reinforce")
        self.actor_grad = ("reinforce" if self.discrete else "dynamics") if actor_grad == "auto" else actor_grad
        self.horizon, self.gamma, self.lam, self.actent = horizon, gamma, lam, actent
        self.slowreg, self.slow_rate = slowreg, slow_rate
        self.retnorm_rate, self.retnorm_limit = retnorm_rate, retnorm_limit
        self.perclo, self.perchi = perclo / 100.0, perchi / 100.0
        self.unimix, self.minstd, self.maxstd = unimix, minstd, maxstd
        out = self.action_dim if self.discrete else 2 * self.action_dim
        self.actor = dreamer_mlp(feat_dim, out, units, layers, out_scale=0.01)  # policy outscale: 0.01
        self.critic = dreamer_mlp(feat_dim, bins, units, layers, out_scale=0.0)  # value outscale: 0.0
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.register_buffer("bins", symexp_bins(bins), persistent=False)
        self.register_buffer("ret_lo", torch.zeros(()))
        self.register_buffer("ret_hi", torch.zeros(()))
        # paper v1: actor / critic Adam lr 3e-5, eps 1e-5, gradient clipping 100
        ao = dict(kind="adam", lr=3e-5, eps=1e-5, clip=100.0)
        ao.update(actor_opt or {})
        co = dict(kind="adam", lr=3e-5, eps=1e-5, clip=100.0)
        co.update(critic_opt or {})
        self.actor_optim = Optim(self.actor.parameters(), **ao)
        self.critic_optim = Optim(self.critic.parameters(), **co)

    def optimizers(self) -> dict[str, Any]:
        return {"actor": self.actor_optim, "critic": self.critic_optim}

    # ------------------------------------------------------------------------------------------
    def dist(self, features: torch.Tensor):
        out = self.actor(features).float()
        if self.discrete:
            return OneHotCategorical(unimix_logits(out, self.unimix))
        mean, std = out.chunk(2, -1)
        return BoundedNormal(mean, std, self.minstd, self.maxstd)

    def act(self, features: torch.Tensor, explore: bool = True) -> torch.Tensor:
        """Action for features [B, F]: one-hot [B, n] for discrete, [B, A] in [-1, 1] for continuous."""
        d = self.dist(features)
        if explore:
            return d.sample() if self.discrete else d.rsample()
        return d.mode()

    def value(self, features: torch.Tensor, slow: bool = False) -> torch.Tensor:
        net = self.slow_critic if slow else self.critic
        return TwoHot(net(features), self.bins).mean()

    # ------------------------------------------------------------------------------------------
    def imagine_and_update(self, wm: WorldModel, start: State, start_cont: Optional[torch.Tensor] = None,
                           autocast: Optional[Any] = None) -> dict[str, float]:
        """Imagine `horizon` steps from `start` (any batch shape; flattened) and update actor + critic.
        `start_cont` [N]: 1 - terminated of the start states (default ones)."""
        start = start.detach()
        shp = start.batch_shape
        if len(shp) > 1:
            start = start.reshape(-1)
        n = start.batch_shape[0]
        c0 = torch.ones(n, device=self.bins.device) if start_cont is None else start_cont.reshape(-1).float()
        ctx = autocast if autocast is not None else _null()
        with ctx, frozen(wm):  # the actor's gradient may flow through the model, never into it
            if self.actor_grad == "dynamics":
                traj = wm.imagine(start, lambda f: self.act(f.detach(), explore=True), self.horizon)
            else:
                with torch.no_grad():
                    traj = wm.imagine(start, lambda f: self.act(f, explore=True), self.horizon)
        feats = traj.features.float()  # [H+1, N, F]
        rew, con = traj.rewards.float(), traj.conts.float()  # [H, N]
        dyn = self.actor_grad == "dynamics"
        with ctx:
            # dynamics backprop: returns differentiate through v(s_t) too, into the features only (the
            # critic's own weight gradients come from the critic loss; computing them here is waste)
            with torch.set_grad_enabled(dyn), frozen(self.critic):
                values = self.value(feats if dyn else feats.detach())  # [H+1, N]
            with torch.no_grad():
                slow = self.value(feats[:-1].detach(), slow=True)
        ret = lambda_returns(rew, con, values, self.gamma, self.lam)  # [H, N] (grad only via dynamics)
        values = values.detach()
        weight = (torch.cumprod(self.gamma * torch.cat([c0[None], con], 0), 0) / self.gamma).detach()[:-1]

        # return normalisation: EMA of the 5th..95th percentile range
        with torch.no_grad():
            flat = ret.detach().flatten()
            q = torch.quantile(flat[: 2**24], torch.tensor([self.perclo, self.perchi], device=flat.device))
            r = self.retnorm_rate
            self.ret_lo.mul_(1 - r).add_(r * q[0])
            self.ret_hi.mul_(1 - r).add_(r * q[1])
            scale = torch.clamp(self.ret_hi - self.ret_lo, min=self.retnorm_limit)
        adv = (ret - values[:-1]) / scale

        # actor
        with ctx:
            d = self.dist(feats[:-1].detach())
        ent = d.entropy()
        if self.actor_grad == "dynamics":
            objective = adv
        else:
            objective = d.log_prob(traj.actions[:-1].detach().float()) * adv.detach()
        actor_loss = -(weight * (objective + self.actent * ent)).mean()
        actor_norm = self.actor_optim.step(actor_loss)

        # critic
        tgt = ret.detach()
        with ctx:
            vd = TwoHot(self.critic(feats[:-1].detach()), self.bins)
        critic_loss = (weight * (vd.loss(tgt) + self.slowreg * vd.loss(slow))).mean()
        critic_norm = self.critic_optim.step(critic_loss)
        self.update_slow()

        with torch.no_grad():
            m = {
                "ac/actor_loss": actor_loss.detach(), "ac/critic_loss": critic_loss.detach(),
                "ac/entropy": ent.detach().mean(), "ac/return": ret.detach().mean(), "ac/value": values.mean(),
                "ac/reward": rew.detach().mean(), "ac/cont": con.detach().mean(), "ac/ret_scale": scale,
                "ac/adv_mag": adv.detach().abs().mean(), "ac/weight": weight.mean(),
            }
            vals = torch.stack([v.float() for v in m.values()]).tolist()
        out = dict(zip(m.keys(), vals))
        out["ac/actor_grad_norm"], out["ac/critic_grad_norm"] = actor_norm, critic_norm
        return out

    @torch.no_grad()
    def update_slow(self) -> None:
        # slowvalue: {rate: 0.02, every: 1}
        torch._foreach_lerp_(list(self.slow_critic.parameters()), list(self.critic.parameters()), self.slow_rate)

    def update(self, batch: Batch) -> dict[str, float]:
        """Learner protocol: `batch` holds `world_model` (a WorldModel) and a real sequence batch
        under the usual keys; starts are the posterior states of every step of it."""
        wm = batch["world_model"]
        with torch.no_grad():
            start = wm.observe(batch["obs"], batch["action"], batch["is_first"])
        cont = 1.0 - batch["terminated"].float() if "terminated" in batch else None
        return self.imagine_and_update(wm, start, cont)


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def from_config(cfg: Any, feat_dim: int, action_space: gym.Space) -> ActorCritic:
    keys = ("units", "layers", "horizon", "gamma", "lam", "actent", "slowreg", "slow_rate", "retnorm_rate", "retnorm_limit",
            "perclo", "perchi", "unimix", "minstd", "maxstd", "actor_grad", "bins", "actor_opt", "critic_opt")
    kw = {k: cfg[k] for k in keys if k in cfg and cfg[k] is not None}
    unknown = [k for k in cfg if k not in keys]
    if unknown:
        raise ConfigError(f"actor_critic: unknown keys {unknown}; valid: {', '.join(keys)}")
    for k in ("actor_opt", "critic_opt"):
        if k in kw:
            kw[k] = dict(kw[k])
    return ActorCritic(feat_dim, action_space, **kw)
