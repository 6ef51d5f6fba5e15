"""Model-free learners on `Batch` (of observations, or of a world model's features), by name.

`build(cfg, feat_dim, action_space)` makes the learner that `cfg["name"]` names from its config group
(`configs/learner/<name>.yaml`): sac (SAC; `num_q` / `q_agg` make it SAC-N / a pessimistic ensemble),
iql, cql, td3bc, bc, and actor_critic (DreamerV3's actor-critic, learned in imagination).
"""
from __future__ import annotations

import importlib
from typing import Any, Mapping

from mbrl.errors import UserError
from mbrl.learners.base import Learner, frozen

#: name -> "module:Class"
LEARNERS = {
    "sac": "mbrl.learners.sac:SAC",
    "iql": "mbrl.learners.iql:IQL",
    "cql": "mbrl.learners.cql:CQL",
    "td3bc": "mbrl.learners.td3bc:TD3BC",
    "bc": "mbrl.learners.bc:BC",
    "actor_critic": "mbrl.learners.actor_critic:ActorCritic",
}


def get(name: str) -> type[Learner]:
    if name not in LEARNERS:
        raise UserError(f"unknown learner {name!r}; valid: {', '.join(sorted(LEARNERS))}")
    module, cls = LEARNERS[name].split(":")
    out = getattr(importlib.import_module(module), cls)
    out.name = name
    return out


def build(cfg: Mapping, feat_dim: int, action_space: Any) -> Learner:
    cfg = dict(cfg)
    return get(str(cfg.get("name"))).from_config(cfg, feat_dim, action_space)


__all__ = ["Learner", "frozen", "LEARNERS", "get", "build"]
