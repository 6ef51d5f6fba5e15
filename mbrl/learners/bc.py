"""Behaviour cloning: a deterministic tanh policy regressed onto the dataset's actions (MSE)."""
from __future__ import annotations

import torch

from mbrl.data.batch import Batch
from mbrl.learners.base import Learner
from mbrl.learners.offline_nets import DeterministicActor, Normalizer
from mbrl.utils.optim import adam


class BC(Learner):
    def __init__(self, obs_dim: int, action_dim: int, hidden: int = 256, layers: int = 2, lr: float = 1e-3, device: str | torch.device = "cpu"):
        super().__init__()
        self.obs_norm = Normalizer(obs_dim)
        self.actor = DeterministicActor(obs_dim, action_dim, hidden, layers)
        self.to(device)
        self.opt = adam(self.actor.parameters(), lr=lr)

    def optimizers(self):
        return {"actor": self.opt}

    @torch.no_grad()
    def act(self, features: torch.Tensor, explore: bool = True) -> torch.Tensor:
        return self.actor(self.obs_norm(features.float()))

    def update(self, batch: Batch) -> dict[str, float]:
        pred = self.actor(self.obs_norm(batch["obs"].float()))
        loss = (pred - batch["action"].float()).pow(2).sum(-1).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"bc/loss": loss.item()}
