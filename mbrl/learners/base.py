"""Learner protocol: model-free learners that talk only to the replay buffer's `Batch`."""
from __future__ import annotations

import contextlib
import inspect
from typing import Mapping

import gymnasium as gym
import torch
from torch import nn

from mbrl.data.batch import Batch
from mbrl.errors import UserError


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

    #: registry name (`learner=<name>`), set by mbrl/learners/__init__.py
    name: str = ""
    #: True for learners that take only continuous (1-D Box) actions
    continuous_only: bool = True

    @classmethod
    def from_config(cls, cfg: Mapping, feat_dim: int, action_space: gym.Space) -> "Learner":
        """The learner from its config group (unknown keys fail with the valid ones) for features of
        size `feat_dim` (observations, or a world model's features) and this action space."""
        cfg = {k: v for k, v in dict(cfg).items() if k != "name"}
        params = inspect.signature(cls.__init__).parameters
        valid = [p for p in params if p not in ("self", "obs_dim", "action_dim", "feat_dim", "action_space", "device")]
        unknown = sorted(set(cfg) - set(valid))
        if unknown:
            raise UserError(f"learner={cls.name}: unknown keys {unknown}; valid: {', '.join(valid)}")
        kw = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in cfg.items() if v is not None}
        if not cls.continuous_only:
            return cls(feat_dim, action_space, **kw)
        if not (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1):
            raise UserError(f"learner={cls.name} needs continuous actions (a 1-D Box); this env has {action_space}. "
                            f"Valid for discrete actions: algo=dreamer (learner=actor_critic)")
        return cls(int(feat_dim), int(action_space.shape[0]), **kw)

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
