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

import contextlib
import copy
from typing import Any, Optional

import gymnasium as gym
import torch

from mbrl.errors import UserError
from mbrl.learners.base import Learner, frozen
from mbrl.models.base import State, WorldModel
from mbrl.models.dists import BoundedNormal, OneHotCategorical, TwoHot, symexp_bins, unimix_logits
from mbrl.models.nets import dreamer_mlp
from mbrl.utils.optim import Optim


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
    continuous_only = False

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
            raise UserError(f"actor_critic: action space {action_space}; valid: Discrete(n) or a 1-D Box")
        if actor_grad not in ("auto", "reinforce", "dynamics"):
            raise UserError(f"actor_critic: actor_grad={actor_grad!r}; valid: auto, reinforce, dynamics")
        if actor_grad == "dynamics" and self.discrete:
            raise UserError("actor_critic: actor_grad=dynamics needs continuous actions; valid for discrete: auto, reinforce")
        # auto: REINFORCE for discrete actions; for continuous ones dynamics backprop where the model's
        # step is usefully differentiable (`WorldModel.differentiable_step`), else REINFORCE
        self.actor_grad = "reinforce" if (actor_grad == "auto" and self.discrete) else actor_grad
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
        ctx = autocast if autocast is not None else contextlib.nullcontext()
        dyn = self.actor_grad == "dynamics" or (self.actor_grad == "auto" and wm.differentiable_step)
        raw: list[torch.Tensor] = []  # REINFORCE, continuous: the unclipped samples the log-probabilities are of
        with ctx, frozen(wm):  # the actor's gradient may flow through the model, never into it
            if dyn:
                traj = wm.imagine(start, lambda f: self.act(f.detach(), explore=True), self.horizon, keep_states=False)
            else:
                with torch.no_grad():
                    traj = wm.imagine(start, self._reinforce_policy(raw), self.horizon, keep_states=False)
        feats = traj.features.float()  # [H+1, N, F]
        rew, con = traj.rewards.float(), traj.conts.float()  # [H, N]
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
        if dyn:
            objective = adv
        else:
            taken = torch.stack(raw[:-1]) if raw else traj.actions[:-1].detach().float()
            objective = d.log_prob(taken) * adv.detach()
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

    def _reinforce_policy(self, raw: list):
        """The imagination policy of the REINFORCE path. Continuous actions: the model receives the
        sample clipped to [-1, 1] (as the env does) while `raw` keeps the unclipped sample, whose
        log-probability the score function needs (the log-probability of a clipped sample is that of
        the boundary, whose gradient pushes every mean towards the bounds whatever the advantage's
        sign; the reference's policy samples are unclipped too)."""
        if self.discrete:
            return lambda f: self.act(f, explore=True)

        def policy(f: torch.Tensor) -> torch.Tensor:
            d = self.dist(f)
            x = d.loc + d.scale * torch.randn_like(d.loc)
            raw.append(x)
            return x.clamp(-1.0, 1.0)

        return policy

    @torch.no_grad()
    def update_slow(self) -> None:
        # slowvalue: {rate: 0.02, every: 1}
        torch._foreach_lerp_(list(self.slow_critic.parameters()), list(self.critic.parameters()), self.slow_rate)
