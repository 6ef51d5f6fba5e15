"""MOReL (Kidambi et al. 2020): the pessimistic MDP. A model transition whose disagreement (the
`disagreement` signal: the ensemble's spread of predicted next states, or the heads' over features)
exceeds a threshold enters the absorbing HALT state: the rollout ends there with reward −`penalty_coef` (κ).

The threshold is `threshold` when set, else `threshold_scale` × the `threshold_quantile` quantile of the
disagreement over the dataset's own (s, a) pairs (MOReL calibrates it from the data the same way,
with the maximum pairwise discrepancy)."""
from __future__ import annotations

import torch

from mbrl.algos.mopo import ModelBasedOffline, model_based_from_config


class MOReL(ModelBasedOffline):
    name = "morel"
    needs = ("disagreement",)

    @torch.no_grad()
    def calibrate(self) -> None:
        e = self.extra
        if e.get("threshold") is not None:
            self.threshold = float(e["threshold"])
            return
        state, action = self.dyna.start(min(len(self.dataset), 20000))
        u = self.model.uncertainty(state, action, ["disagreement"])["disagreement"]
        self.threshold = float(torch.quantile(u.float(), float(e.get("threshold_quantile", 0.99)))) * float(e.get("threshold_scale", 1.0))

    def pretrain(self):
        m = super().pretrain()
        m["morel/threshold"] = self.threshold
        return m

    def penalty(self, traj):
        if not hasattr(self, "threshold"):
            self.calibrate()
        halt = traj.signals["disagreement"] > self.threshold
        reward = torch.where(halt, torch.full_like(traj.rewards.float(), -self.penalty_coef), traj.rewards.float())
        return reward, halt, {}


def from_config(cfg, run_dir=None):
    return model_based_from_config(cfg, run_dir, MOReL)
