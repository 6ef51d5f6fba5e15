"""MOReL (Kidambi et al. 2020): the pessimistic MDP. A model transition whose ensemble disagreement
(`EnsembleModel.uncertainty`: std across elites of the predicted next-state means) exceeds a threshold
enters the absorbing HALT state: the rollout ends there with reward −`penalty_coef` (κ).

The threshold is `threshold` when set, else `threshold_scale` × the `threshold_quantile` quantile of the
disagreement over the dataset's own (s, a) pairs (MOReL calibrates it from the data the same way,
with the maximum pairwise discrepancy)."""
from __future__ import annotations

import numpy as np
import torch

from mbrl.algos.mopo import ModelBasedOffline, model_based_from_config


class MOReL(ModelBasedOffline):
    name = "morel"

    def calibrate(self) -> None:
        e = self.extra
        if e.get("threshold") is not None:
            self.threshold = float(e["threshold"])
            return
        n = min(len(self.dataset), 20000)
        idx = np.random.default_rng(self.loop.seed).choice(len(self.dataset), n, replace=False)
        obs = torch.as_tensor(self.dataset.obs[idx], dtype=torch.float32, device=self.device)
        act = torch.as_tensor(self.dataset.scaled_actions()[idx], dtype=torch.float32, device=self.device)
        with torch.no_grad():
            u = self.model.uncertainty(self.model.start_states(obs), act)
        self.threshold = float(torch.quantile(u.float(), float(e.get("threshold_quantile", 0.99)))) * float(e.get("threshold_scale", 1.0))

    def pretrain(self):
        m = super().pretrain()
        m["morel/threshold"] = self.threshold
        return m

    def penalize(self, state, action, next_state):
        if not hasattr(self, "threshold"):
            self.calibrate()
        u = self.model.uncertainty(state, action)
        halt = u > self.threshold
        reward = torch.where(halt, torch.full_like(next_state.reward, -self.penalty_coef), next_state.reward)
        return reward, halt, {}


def from_config(cfg, run_dir=None):
    return model_based_from_config(cfg, run_dir, MOReL)
