"""Soft Actor-Critic (Haarnoja et al. 2018, "SAC: Algorithms and Applications" version): twin Q
networks with target networks (Polyak τ), tanh-squashed Gaussian policy, automatic entropy tuning
towards target entropy -|A|. Continuous actions in [-1, 1].

Works on any `Batch` of transitions (obs, action, reward, next_obs, terminated): real data, imagined
data (MBPO) or a mix. Observations are vectors (`features`); pixel inputs need an encoder in front.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from mbrl.data.batch import Batch
from mbrl.learners.base import Learner, frozen
from mbrl.learners.offline_nets import aggregate_q
from mbrl.models.nets import ensemble_mlp, mlp
from mbrl.utils.optim import adam

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class TanhGaussianActor(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, hidden: int, layers: int):
        super().__init__()
        self.net = mlp(obs_dim, 2 * action_dim, hidden, layers)

    def forward(self, obs: torch.Tensor, deterministic: bool = False, with_logp: bool = True):
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        # smooth bound of log_std, as in the SAC reference implementations
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        if deterministic:
            return torch.tanh(mean), None
        std = log_std.exp()
        eps = torch.randn_like(mean)
        pre = mean + std * eps
        action = torch.tanh(pre)
        if not with_logp:
            return action, None
        # log N(pre) - log|d tanh/d pre|, the latter in the numerically stable softplus form
        logp = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        logp = logp - (2 * (math.log(2) - pre - F.softplus(-2 * pre))).sum(-1)
        return action, logp


class QEnsemble(nn.Module):
    """`num_q` Q networks evaluated in one batched call (stacked weights, no Python loop)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int, layers: int, num_q: int = 2):
        super().__init__()
        self.num_q = num_q
        self.net = ensemble_mlp(num_q, obs_dim + action_dim, 1, hidden, layers)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """obs [B, O], action [B, A] -> Q values [num_q, B]."""
        return self.net(torch.cat([obs, action], -1)).squeeze(-1)


class SAC(Learner):
    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: int = 256,
        layers: int = 2,
        lr: float = 3e-4,
        actor_lr: Optional[float] = None,
        alpha_lr: Optional[float] = None,
        gamma: float = 0.99,
        tau: float = 0.005,
        init_alpha: float = 1.0,
        learn_alpha: bool = True,
        target_entropy: Optional[float] = None,
        num_q: int = 2,
        q_agg: str = "min",
        lcb_beta: float = 1.0,
        actor_every: int = 1,
        device: str | torch.device = "cpu",
    ):
        super().__init__()
        aggregate_q(torch.zeros(2, 1), q_agg)  # validates the name
        self.q_agg, self.lcb_beta = q_agg, float(lcb_beta)
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.gamma, self.tau, self.actor_every = gamma, tau, actor_every
        self.learn_alpha = learn_alpha
        self.target_entropy = -float(action_dim) if target_entropy is None else float(target_entropy)
        self.actor = TanhGaussianActor(obs_dim, action_dim, hidden, layers)
        self.critic = QEnsemble(obs_dim, action_dim, hidden, layers, num_q)
        self.critic_target = QEnsemble(obs_dim, action_dim, hidden, layers, num_q)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(init_alpha)))
        self.to(device)
        self.actor_opt = adam(self.actor.parameters(), lr=actor_lr or lr)
        self.critic_opt = adam(self.critic.parameters(), lr=lr)
        self.alpha_opt = adam([self.log_alpha], lr=alpha_lr or lr)
        self._n_updates = 0

    def optimizers(self):
        return {"actor": self.actor_opt, "critic": self.critic_opt, "alpha": self.alpha_opt}

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    @torch.no_grad()
    def act(self, features: torch.Tensor, explore: bool = True) -> torch.Tensor:
        action, _ = self.actor(features.float(), deterministic=not explore, with_logp=False)
        return action

    def critic_target_value(self, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            next_a, next_logp = self.actor(batch["next_obs"].float())
            q_next = aggregate_q(self.critic_target(batch["next_obs"].float(), next_a), self.q_agg, self.lcb_beta) - self.alpha * next_logp
            cont = 1.0 - batch["terminated"].float()
            return batch["reward"].float() + self.gamma * cont * q_next

    def update_actor(self, obs: torch.Tensor, prefix: str = "sac") -> dict[str, float]:
        """One actor step (maximise min-Q minus α·log π) and, if learned, one temperature step."""
        new_a, logp = self.actor(obs)
        with frozen(self.critic):
            q_new = self.critic(obs, new_a).min(0).values
        actor_loss = (self.alpha.detach() * logp - q_new).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        if self.learn_alpha:
            alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_opt.step()
        return {f"{prefix}/actor_loss": actor_loss.item(), f"{prefix}/entropy": -logp.mean().item(), f"{prefix}/alpha": self.alpha.item()}

    def update_target(self) -> None:
        """Polyak-average the target critics towards the critics (rate τ)."""
        with torch.no_grad():
            torch._foreach_lerp_(list(self.critic_target.parameters()), list(self.critic.parameters()), self.tau)

    def update(self, batch: Batch) -> dict[str, float]:
        obs, action = batch["obs"].float(), batch["action"].float()
        target = self.critic_target_value(batch)
        q = self.critic(obs, action)
        critic_loss = 0.5 * (q - target.unsqueeze(0)).pow(2).mean(1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        metrics = {"sac/critic_loss": critic_loss.item(), "sac/q": q.mean().item()}

        if self._n_updates % self.actor_every == 0:
            metrics.update(self.update_actor(obs))
        self.update_target()
        self._n_updates += 1
        return metrics
