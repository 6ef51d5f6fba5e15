"""Learner protocol: model-free learners that talk only to the replay buffer's `Batch`."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from mbrl.data.batch import Batch


@contextlib.contextmanager
def frozen(module: nn.Module):
    """Parameters of `module` do not require gradients inside the block (restored after): gradients
    flow through the module to its inputs without computing its own weight gradients."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


class Learner(nn.Module):
    """`act(features, explore) -> action`, `update(batch) -> metrics`, `state_dict()`.

    `state_dict()` / `load_state_dict()` include the optimisers' states (override
    `optimizers()` to list them), so a checkpoint resumes training exactly.
    """

    def act(self, features: torch.Tensor, explore: bool = True) -> torch.Tensor:
        raise NotImplementedError

    def update(self, batch: Batch) -> dict[str, float]:
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}

    def state_dict(self, *args, **kwargs):  # type: ignore[override]
        sd = {"modules": super().state_dict(*args, **kwargs)}
        sd["optimizers"] = {k: o.state_dict() for k, o in self.optimizers().items()}
        return sd

    def load_state_dict(self, sd, strict: bool = True):  # type: ignore[override]
        super().load_state_dict(sd["modules"], strict=strict)
        for k, o in self.optimizers().items():
            o.load_state_dict(sd["optimizers"][k])
