"""MOBILE (Sun et al. 2023): model-Bellman inconsistency penalty. For each model transition (s, a),
every elite predicts its own next state and reward; with a' ~ π(s'_i) the Bellman targets
  y_i = r_i + γ (1 − d_i) min_j Q̄_j(s'_i, a'_i)
disagree where the model is unsure; the reward is r̂ − β · std_i(y_i), β = `penalty_coef`.
All elites are evaluated in one batched call (rows repeated per elite, the ensemble's block layout)."""
from __future__ import annotations

import torch

from mbrl.algos.mopo import ModelBasedOffline, model_based_from_config
from mbrl.models.ensemble import EnsembleState


class MOBILE(ModelBasedOffline):
    name = "mobile"

    def penalize(self, state, action, next_state):
        K = self.model.num_elites
        B = state.obs.shape[0]
        obs = state.obs.repeat(K, 1)  # block layout: rows k*B .. k*B+B-1 use elite k
        member = self.model.initial_members(K * B, obs.device)
        z = torch.zeros(K * B, device=obs.device)
        nxt = self.model.step(EnsembleState(obs=obs, reward=z, terminated=z.clone(), member=member), action.repeat(K, 1))
        na, _ = self.learner.actor(nxt.obs)
        q = self.learner.critic_target(nxt.obs, na).min(0).values
        y = nxt.reward + self.learner.gamma * (1.0 - nxt.terminated) * q
        u = y.reshape(K, B).std(0)
        return next_state.reward - self.penalty_coef * u, torch.zeros(B, dtype=torch.bool, device=obs.device), {}


def from_config(cfg, run_dir=None):
    return model_based_from_config(cfg, run_dir, MOBILE)
