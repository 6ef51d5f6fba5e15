"""RAVL (Sims et al. 2024, "The Edge-of-Reach Problem in Offline Model-Based RL"): the failure of
model-based offline RL is values bootstrapped from states the rollouts reach only at their last step;
the fix is value pessimism from a large Q ensemble (SAC-N / EDAC-style) rather than a dynamics
penalty. Here: SAC with `learner.num_q` critics (10 by this algo's `group_defaults`) whose target is
the ensemble minimum (`learner.q_agg: min`) or a lower confidence bound mean − `lcb_beta` · std
(`q_agg: lcb`), on MOPO-style rollouts; an optional dynamics penalty (`penalty_coef`, default 0) uses
MOPO's `aleatoric` signal."""
from __future__ import annotations

import torch

from mbrl.algos.mopo import ModelBasedOffline, model_based_from_config


class RAVL(ModelBasedOffline):
    name = "ravl"

    def signals(self) -> tuple[str, ...]:
        return ("aleatoric",) if self.penalty_coef else ()

    def penalty(self, traj):
        r = traj.rewards.float()
        if self.penalty_coef:
            r = r - self.penalty_coef * traj.signals["aleatoric"].float()
        return r, torch.zeros_like(r, dtype=torch.bool), {}


def from_config(cfg, run_dir=None):
    return model_based_from_config(cfg, run_dir, RAVL)
