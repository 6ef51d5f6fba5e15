"""Helpers shared by the planners: bounds, warm start, safe scoring."""
from __future__ import annotations

from typing import Optional

import torch

from mbrl.planners.base import ScoreFn
from mbrl.errors import UserError


def as_bounds(low, high, action_dim: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    lo = torch.as_tensor(low, dtype=torch.float32, device=device).expand(action_dim).clone()
    hi = torch.as_tensor(high, dtype=torch.float32, device=device).expand(action_dim).clone()
    if not bool((hi > lo).all()):
        raise UserError(f"action_high must exceed action_low in every dim; got low={lo.tolist()} high={hi.tolist()}")
    return lo, hi


def shifted_mean(prev: Optional[torch.Tensor], horizon: int, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Warm start: the previous solution shifted by one step (last step repeated), or the centre of
    the bounds. Adapts to a changed horizon."""
    centre = (lo + hi) / 2
    if prev is None:
        return centre.expand(horizon, -1).clone()
    sh = torch.cat([prev[1:], prev[-1:]], 0)
    if sh.shape[0] >= horizon:
        return sh[:horizon].clone()
    return torch.cat([sh, sh[-1:].expand(horizon - sh.shape[0], -1)], 0)


def safe_score(score_fn: ScoreFn, actions: torch.Tensor) -> torch.Tensor:
    """score_fn with NaN / inf replaced by a very low value (float32 [N])."""
    r = score_fn(actions).float().reshape(-1)
    if r.shape[0] != actions.shape[0]:
        raise ValueError(f"score_fn returned {r.shape[0]} scores for {actions.shape[0]} action sequences")
    return torch.nan_to_num(r, nan=-1e10, posinf=-1e10, neginf=-1e10)


def check_proposals(proposals: Optional[torch.Tensor], horizon: int, action_dim: int, population: int, lo: torch.Tensor,
                    hi: torch.Tensor) -> Optional[torch.Tensor]:
    """Validated proposals [P, H, A] clamped into the bounds (P < population), or None."""
    if proposals is None or proposals.shape[0] == 0:
        return None
    if proposals.dim() != 3 or tuple(proposals.shape[1:]) != (horizon, action_dim) or proposals.shape[0] >= population:
        raise UserError(f"planner proposals have shape {tuple(proposals.shape)}; valid: [P, {horizon}, {action_dim}] with P < population ({population})")
    return torch.maximum(torch.minimum(proposals.to(lo.device, torch.float32), hi), lo)


def with_proposals(cand: torch.Tensor, proposals: Optional[torch.Tensor]) -> torch.Tensor:
    """Candidates [N, H, A] whose first P rows are the proposals (the population size is kept)."""
    if proposals is None:
        return cand
    return torch.cat([proposals, cand[proposals.shape[0]:]], 0)
