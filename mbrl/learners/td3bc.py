"""TD3+BC (Fujimoto & Gu 2021): TD3 with the actor loss  -λ Q(s, π(s)) + (π(s) - a)²,
λ = α / mean|Q| (α = 2.5), target policy smoothing, delayed actor updates, normalised observations."""
from __future__ import annotations

import copy

import torch

from mbrl.data.batch import Batch
from mbrl.learners.base import Learner
from mbrl.learners.offline_nets import DeterministicActor, Normalizer, soft_update
from mbrl.learners.sac import QEnsemble
from mbrl.utils.optim import adam


class TD3BC(Learner):
    def __init__(self, obs_dim: int, action_dim: int, hidden: int = 256, layers: int = 2, lr: float = 3e-4, gamma: float = 0.99,
                 tau: float = 0.005, alpha: float = 2.5, policy_noise: float = 0.2, noise_clip: float = 0.5, actor_every: int = 2,
                 device: str | torch.device = "cpu"):
        super().__init__()
        self.gamma, self.tau, self.alpha = gamma, tau, alpha
        self.policy_noise, self.noise_clip, self.actor_every = policy_noise, noise_clip, actor_every
        self.obs_norm = Normalizer(obs_dim)
        self.actor = DeterministicActor(obs_dim, action_dim, hidden, layers)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = QEnsemble(obs_dim, action_dim, hidden, layers, 2)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.to(device)
        self.actor_opt = adam(self.actor.parameters(), lr=lr)
        self.critic_opt = adam(self.critic.parameters(), lr=lr)
        self._n = 0

    def optimizers(self):
        return {"actor": self.actor_opt, "critic": self.critic_opt}

    @torch.no_grad()
    def act(self, features: torch.Tensor, explore: bool = True) -> torch.Tensor:
        return self.actor(self.obs_norm(features.float()))

    @torch.no_grad()
    def bootstrap(self, next_obs: torch.Tensor) -> torch.Tensor:
        """The value a TD target bootstraps from at (raw) observations [N, D]: min_i Q̄_i(s', π̄(s') + ε),
        ε ~ N(0, policy_noise²) clipped at ±noise_clip (TD3's target policy smoothing). [N]"""
        nobs = self.obs_norm(next_obs.float())
        na = self.actor_target(nobs)
        noise = (torch.randn_like(na) * self.policy_noise).clamp(-self.noise_clip, self.noise_clip)
        return self.critic_target(nobs, (na + noise).clamp(-1.0, 1.0)).min(0).values

    def update(self, batch: Batch) -> dict[str, float]:
        """One TD3+BC step. A batch that carries `target` [B] regresses the critics onto it instead of
        r + γ (1 - d) bootstrap(s') (model-based value expansion: mbrl/algos/dwm.py)."""
        obs = self.obs_norm(batch["obs"].float())
        act = batch["action"].float()
        with torch.no_grad():
            if "target" in batch:
                target = batch["target"].float()
            else:
                target = batch["reward"].float() + self.gamma * (1.0 - batch["terminated"].float()) * self.bootstrap(batch["next_obs"])
        q = self.critic(obs, act)
        critic_loss = (q - target).pow(2).mean(1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        m = {"td3bc/critic_loss": critic_loss.item(), "td3bc/q": q.mean().item()}
        if self._n % self.actor_every == 0:
            pi = self.actor(obs)
            q_pi = self.critic(obs, pi)[0]
            lam = self.alpha / q_pi.abs().mean().detach().clamp_min(1e-6)
            bc = (pi - act).pow(2).mean()
            actor_loss = -lam * q_pi.mean() + bc
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
            soft_update(self.critic_target, self.critic, self.tau)
            soft_update(self.actor_target, self.actor, self.tau)
            m.update({"td3bc/actor_loss": actor_loss.item(), "td3bc/bc_mse": bc.item()})
        self._n += 1
        return m
