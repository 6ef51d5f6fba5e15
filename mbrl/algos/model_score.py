"""A planner's `score(actions[N, H, A]) -> returns[N]` from ANY WorldModel: `imagine` with open-loop actions.

Every candidate is evaluated with `particles` imagined rollouts; all candidates × particles go
through the model in ONE batched `step` per horizon step, inside the model's fast inference context
(the ensemble's folded bf16 kernel). Rows are laid out particle-major (row p * N + c: candidate c,
particle p) by `model.repeat_particles`, so an ensemble's TS∞ member blocks line up with whole
particle groups (each candidate sees every member equally often) and a step needs no gather. The
score is the particle mean of Σ_t γ^t r_t · alive_t (alive = product of the model's `cont` before
step t), plus an optional `terminal_value(features) -> [B]` bootstrap γ^H · alive_H · V(s_H).
A latent model plans from the current posterior state (PlaNet).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from mbrl.models.base import State, WorldModel


def discounted_return(rewards: torch.Tensor, conts: torch.Tensor, discount: float, last_value: Optional[torch.Tensor] = None) -> torch.Tensor:
    """rewards, conts [H, B] -> Σ_t γ^t r_t Π_{s<t} c_s (+ γ^H Π_{s<H} c_s · last_value) [B]."""
    h = rewards.shape[0]
    alive = torch.cumprod(torch.cat([torch.ones_like(conts[:1]), conts.float()], 0), 0)  # [H+1, B]
    disc = discount ** torch.arange(h + 1, device=rewards.device, dtype=torch.float32)
    ret = (disc[:h, None] * alive[:h] * rewards.float()).sum(0)
    if last_value is not None:
        ret = ret + disc[h] * alive[h] * last_value.float()
    return ret


def make_score_fn(
    model: WorldModel,
    start: State,
    particles: int = 20,
    discount: float = 1.0,
    terminal_value: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """`start`: a State with batch size 1 (the current real state or posterior)."""

    def score(actions: torch.Tensor) -> torch.Tensor:
        n, h, _ = actions.shape
        state = model.repeat_particles(start, n * particles)
        acts = actions.repeat(particles, 1, 1)  # row p * n + c: candidate c, particle p
        with model.inference():
            traj = model.imagine(state, acts, h, keep_states=False)
            last = terminal_value(traj.features[-1]) if terminal_value is not None else None
        return discounted_return(traj.rewards, traj.conts, discount, last).reshape(particles, n).mean(0)

    return score
