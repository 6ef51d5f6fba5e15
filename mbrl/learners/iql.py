"""Implicit Q-Learning (Kostrikov et al. 2022): V by expectile regression on Q (τ), Q by TD onto V,
policy by advantage-weighted regression exp(β·(Q − V)) (capped at 100) of a deterministic actor
(the variant used by CORL and the IQL authors' for locomotion, MSE instead of Gaussian NLL)."""
from __future__ import annotations

import copy

import torch

from mbrl.data.batch import Batch
from mbrl.learners.base import Learner
from mbrl.learners.offline_nets import DeterministicActor, Normalizer, soft_update
from mbrl.learners.sac import QEnsemble
from mbrl.models.nets import mlp
from mbrl.errors import UserError
from mbrl.utils.optim import adam


class IQL(Learner):
    def __init__(self, obs_dim: int, action_dim: int, hidden: int = 256, layers: int = 2, lr: float = 3e-4, gamma: float = 0.99,
                 tau: float = 0.005, expectile: float = 0.7, beta: float = 3.0, max_weight: float = 100.0,
                 device: str | torch.device = "cpu"):
        super().__init__()
        if not 0.0 < expectile < 1.0:
            raise UserError(f"iql expectile must be in (0, 1), got {expectile}")
        self.gamma, self.tau, self.expectile, self.beta, self.max_weight = gamma, tau, expectile, beta, max_weight
        self.obs_norm = Normalizer(obs_dim)
        self.actor = DeterministicActor(obs_dim, action_dim, hidden, layers)
        self.value = mlp(obs_dim, 1, hidden, layers)
        self.critic = QEnsemble(obs_dim, action_dim, hidden, layers, 2)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.to(device)
        self.actor_opt = adam(self.actor.parameters(), lr=lr)
        self.value_opt = adam(self.value.parameters(), lr=lr)
        self.critic_opt = adam(self.critic.parameters(), lr=lr)

    def optimizers(self):
        return {"actor": self.actor_opt, "value": self.value_opt, "critic": self.critic_opt}

    @torch.no_grad()
    def act(self, features: torch.Tensor, explore: bool = True) -> torch.Tensor:
        return self.actor(self.obs_norm(features.float()))

    @torch.no_grad()
    def bootstrap(self, next_obs: torch.Tensor) -> torch.Tensor:
        """The value a TD target bootstraps from at (raw) observations [N, D]: V(s'). [N]"""
        return self.value(self.obs_norm(next_obs.float())).squeeze(-1)

    def update(self, batch: Batch) -> dict[str, float]:
        """One IQL step; a batch that carries `target` [B] regresses Q onto it instead of r + γ (1 - d) V(s')."""
        obs = self.obs_norm(batch["obs"].float())
        act = batch["action"].float()
        with torch.no_grad():
            q_t = self.critic_target(obs, act).min(0).values
        v = self.value(obs).squeeze(-1)
        diff = q_t - v
        w = torch.where(diff > 0, self.expectile, 1 - self.expectile)
        value_loss = (w * diff.pow(2)).mean()
        self.value_opt.zero_grad(set_to_none=True)
        value_loss.backward()
        self.value_opt.step()

        with torch.no_grad():
            if "target" in batch:  # a precomputed TD target (model-based value expansion: mbrl/algos/dwm.py)
                target = batch["target"].float()
            else:
                target = batch["reward"].float() + self.gamma * (1.0 - batch["terminated"].float()) * self.bootstrap(batch["next_obs"])
        q = self.critic(obs, act)
        critic_loss = (q - target).pow(2).mean(1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        weight = torch.exp(self.beta * diff.detach()).clamp(max=self.max_weight)
        actor_loss = (weight * (self.actor(obs) - act).pow(2).sum(-1)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        soft_update(self.critic_target, self.critic, self.tau)
        return {"iql/value_loss": value_loss.item(), "iql/critic_loss": critic_loss.item(), "iql/actor_loss": actor_loss.item(),
                "iql/adv": diff.mean().item(), "iql/q": q.mean().item()}
