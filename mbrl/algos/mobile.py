"""MOBILE (Sun et al. 2023): model-Bellman inconsistency penalty. For each model transition (s, a),
every member predicts its own next state and reward (the `members` signal: the ensemble's elites, or
the heads over a latent backbone's features); with a' ~ π(s'_i) the Bellman targets
  y_i = r_i + γ c_i min_j Q̄_j(s'_i, a'_i)
disagree where the model is unsure; the reward is r̂ − β · std_i(y_i), β = `penalty_coef`.
Every member and step goes through the actor and critics in one batched call."""
from __future__ import annotations

import torch

from mbrl.algos.mopo import ModelBasedOffline, model_based_from_config


class MOBILE(ModelBasedOffline):
    name = "mobile"
    needs = ("members",)

    @torch.no_grad()
    def penalty(self, traj):
        m = traj.signals["members"]  # features [k, K, n, F], reward [k, K, n], cont [k, K, n] or None
        k, K, n, F = m.features.shape
        f = m.features.reshape(-1, F).float()
        na, _ = self.learner.actor(f)
        q = self.learner.critic_target(f, na).min(0).values.reshape(k, K, n)
        cont = m.cont.float() if m.cont is not None else traj.conts.float().unsqueeze(1)
        y = m.reward.float() + self.learner.gamma * cont * q
        r = traj.rewards.float() - self.penalty_coef * y.std(1)
        return r, torch.zeros_like(r, dtype=torch.bool), {}


def from_config(cfg, run_dir=None):
    return model_based_from_config(cfg, run_dir, MOBILE)
