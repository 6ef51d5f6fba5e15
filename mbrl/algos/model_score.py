"""Build a planner's `score(actions[N, H, A]) -> returns[N]` from ANY WorldModel with particles.

Every candidate is evaluated with `particles` imagined rollouts; all candidates × particles go
through the model in ONE batched `step` per horizon step. Rows are laid out particle-major
([P, N] flattened), so with `model.initial_members` an ensemble's TS∞ member blocks line up
with whole particle groups (each candidate sees every member equally often) and a step needs no
gather. The score is the particle mean of Σ_t γ^t r_t · alive_t (alive = product of the model's
`cont` before step t), plus an optional `terminal_value(features) -> [B]` bootstrap at the end.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch

from mbrl.models.base import State, WorldModel


def make_score_fn(
    model: WorldModel,
    start: State,
    particles: int = 20,
    discount: float = 1.0,
    terminal_value: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    planning_context: bool = True,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """`start`: a State with batch size 1 (the current real state)."""

    def score(actions: torch.Tensor) -> torch.Tensor:
        n, h, _ = actions.shape
        rows = n * particles
        state = start[torch.zeros(rows, dtype=torch.long, device=actions.device)]
        if hasattr(model, "initial_members") and hasattr(state, "member"):
            state.member = model.initial_members(rows, actions.device)
        # row r = p * n + c: candidate c, particle p
        acts = actions.unsqueeze(0).expand(particles, -1, -1, -1).reshape(rows, h, -1)
        ret = torch.zeros(rows, device=actions.device)
        alive = torch.ones(rows, device=actions.device)
        disc = 1.0
        ctx = model.planning() if planning_context and hasattr(model, "planning") else contextlib.nullcontext()
        with ctx:
            for t in range(h):
                state = model.step(state, acts[:, t])
                ret = ret + disc * alive * model.reward(state).float()
                alive = alive * model.cont(state).float()
                disc *= discount
            if terminal_value is not None:
                ret = ret + disc * alive * terminal_value(model.features(state)).float()
        return ret.reshape(particles, n).mean(0)

    return score
