"""Planner protocol: trajectory optimisers over a scoring function. A planner never sees a model."""
from __future__ import annotations

from typing import Callable, Optional

import torch

ScoreFn = Callable[[torch.Tensor], torch.Tensor]  # actions [N, H, A] -> returns [N]


class Planner:
    """`plan(score_fn, action_low, action_high, horizon, proposals=None) -> actions [H, A]`, warm-started
    from the previous solution (shifted by one step). `reset()` forgets it (call at episode start).
    `proposals` [P, H, A]: candidate sequences from a policy prior (TD-MPC2), scored among the samples of
    every iteration (they take the place of P of them, so each iteration stays one batched score call)."""

    def __init__(self, action_dim: int, device: torch.device | str = "cpu", seed: Optional[int] = None):
        self.action_dim = action_dim
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        if seed is not None:
            self.generator.manual_seed(seed)
        self._prev: Optional[torch.Tensor] = None

    def reset(self) -> None:
        self._prev = None

    def plan(self, score_fn: ScoreFn, action_low: torch.Tensor | float, action_high: torch.Tensor | float, horizon: int,
             proposals: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError
