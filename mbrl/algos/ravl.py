"""RAVL (Sims et al. 2024, "The Edge-of-Reach Problem in Offline Model-Based RL"): the failure of
model-based offline RL is values bootstrapped from states the rollouts reach only at their last step;
the fix is value pessimism from a large Q ensemble (SAC-N / EDAC-style) rather than a dynamics
penalty. Here: SAC with `sac.num_q` critics (default 10) whose target is the ensemble minimum
(`q_agg: min`) or a lower confidence bound mean − `lcb_beta` · std (`q_agg: lcb`), on MOPO-style
rollouts; an optional dynamics penalty (`penalty_coef`, default 0) uses MOPO's aleatoric std."""
from __future__ import annotations

import torch

from mbrl.algos.mopo import ModelBasedOffline, model_based_from_config
from mbrl.learners.offline_nets import aggregate_q
from mbrl.learners.sac import SAC


class PessimisticSAC(SAC):
    """SAC whose critic target aggregates the Q ensemble by `q_agg` (min | lcb | mean)."""

    def __init__(self, obs_dim: int, action_dim: int, q_agg: str = "min", lcb_beta: float = 1.0, **kw):
        super().__init__(obs_dim, action_dim, **kw)
        aggregate_q(torch.zeros(2, 1), q_agg)  # validates the name
        self.q_agg, self.lcb_beta = q_agg, float(lcb_beta)

    def critic_target_value(self, batch):
        with torch.no_grad():
            next_a, next_logp = self.actor(batch["next_obs"].float())
            q = aggregate_q(self.critic_target(batch["next_obs"].float(), next_a), self.q_agg, self.lcb_beta) - self.alpha * next_logp
            return batch["reward"].float() + self.gamma * (1.0 - batch["terminated"].float()) * q


class RAVL(ModelBasedOffline):
    name = "ravl"

    def penalize(self, state, action, next_state):
        r = next_state.reward
        if self.penalty_coef:
            r = r - self.penalty_coef * self.model.aleatoric(state, action)
        return r, torch.zeros_like(r, dtype=torch.bool), {}


def from_config(cfg, run_dir=None):
    return model_based_from_config(cfg, run_dir, RAVL, PessimisticSAC)
