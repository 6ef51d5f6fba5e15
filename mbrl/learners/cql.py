"""Conservative Q-Learning (Kumar et al. 2020), the CQL(H) variant on top of SAC: the critic loss adds
  cql_weight · E_s[ logsumexp_a Q(s, a) − Q(s, a_data) ]
with the log-sum-exp estimated by importance sampling over `num_samples` uniform actions and policy
actions at s and s' (log-densities subtracted), as in the authors' code. Deterministic backup without
the entropy term (their locomotion setting) unless `backup_entropy`. Observations normalised with the
dataset statistics."""
from __future__ import annotations

import math
from typing import Optional

import torch

from mbrl.data.batch import Batch
from mbrl.learners.offline_nets import Normalizer
from mbrl.learners.sac import SAC


class CQL(SAC):
    def __init__(self, obs_dim: int, action_dim: int, cql_weight: float = 5.0, num_samples: int = 10, temperature: float = 1.0,
                 backup_entropy: bool = False, hidden: int = 256, layers: int = 2, lr: float = 3e-4, actor_lr: Optional[float] = 1e-4,
                 gamma: float = 0.99, tau: float = 0.005, num_q: int = 2, device: str | torch.device = "cpu"):
        super().__init__(obs_dim, action_dim, hidden=hidden, layers=layers, lr=lr, actor_lr=actor_lr, gamma=gamma, tau=tau, num_q=num_q, device=device)
        self.cql_weight, self.num_samples, self.temperature, self.backup_entropy = cql_weight, num_samples, temperature, backup_entropy
        self.obs_norm = Normalizer(obs_dim).to(device)

    @torch.no_grad()
    def act(self, features: torch.Tensor, explore: bool = True) -> torch.Tensor:
        return super().act(self.obs_norm(features.float()), explore)

    def update(self, batch: Batch) -> dict[str, float]:
        obs, nobs = self.obs_norm(batch["obs"].float()), self.obs_norm(batch["next_obs"].float())
        act = batch["action"].float()
        B, A, M = obs.shape[0], act.shape[-1], self.num_samples
        with torch.no_grad():
            na, nlogp = self.actor(nobs)
            qn = self.critic_target(nobs, na).min(0).values
            if self.backup_entropy:
                qn = qn - self.alpha * nlogp
            target = batch["reward"].float() + self.gamma * (1.0 - batch["terminated"].float()) * qn
        q_data = self.critic(obs, act)  # [N, B]
        td_loss = 0.5 * (q_data - target).pow(2).mean(1).sum()
        # log-sum-exp over sampled actions, all in one batched critic call: [M*B] rows per source
        obs_r = obs.repeat(M, 1)
        with torch.no_grad():
            a_rand = torch.rand(M * B, A, device=obs.device) * 2 - 1
            a_pi, logp_pi = self.actor(obs_r)
            a_npi, logp_npi = self.actor(nobs.repeat(M, 1))
        q_all = self.critic(torch.cat([obs_r, obs_r, obs_r]), torch.cat([a_rand, a_pi, a_npi]))  # [N, 3*M*B]
        logd = torch.cat([torch.full((M * B,), A * math.log(0.5), device=obs.device), logp_pi, logp_npi])
        q_all = (q_all - self.temperature * logd).reshape(q_all.shape[0], 3 * M, B)
        lse = self.temperature * torch.logsumexp(q_all / self.temperature, dim=1)  # [N, B]
        gap = (lse - q_data).mean(1).sum()
        critic_loss = td_loss + self.cql_weight * gap
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        m = {"cql/td_loss": td_loss.item(), "cql/gap": gap.item() / q_data.shape[0], "cql/q": q_data.mean().item()}

        m.update(self.update_actor(obs, prefix="cql"))
        self.update_target()
        return m
