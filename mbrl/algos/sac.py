"""SAC on real transitions: `python -m mbrl.train env=gym/Pendulum-v1 algo=sac`."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from mbrl.algos.base import Algorithm, LoopConfig
from mbrl.algos.common import build_learner, loop_config, make_buffer, make_envs, vector_obs_dim
from mbrl.learners.base import Learner


class SACAlgorithm(Algorithm):
    """Model-free SAC trained by the shared loop (also the policy learner inside MBPO)."""

    name = "sac"

    def __init__(self, env, eval_env, buffer, learner: Learner, loop: LoopConfig, batch_size: int = 256, run_dir=None):
        super().__init__(env, eval_env, buffer, loop, run_dir)
        self.learner = learner.to(self.device)
        self.batch_size = batch_size

    def act(self, obs: Any, is_first: np.ndarray, state: Any, explore: bool):
        a = self.learner.act(torch.as_tensor(obs, dtype=torch.float32, device=self.device), explore=explore)
        return a.cpu().numpy(), state

    def can_train(self) -> bool:
        return len(self.buffer) >= self.batch_size

    def train_step(self) -> dict[str, float]:
        return self.learner.update(self.buffer.sample(self.batch_size))

    def modules(self) -> dict[str, Any]:
        return {"learner": self.learner}


def from_config(cfg: Any, run_dir: Optional[str] = None) -> SACAlgorithm:
    env, eval_env = make_envs(cfg)
    a = cfg.algo
    obs_dim = vector_obs_dim(env.single_observation_space, "algo=sac")
    learner = build_learner(cfg, obs_dim, env.single_action_space, "algo=sac")
    buffer = make_buffer(env, cfg, a.buffer_size)
    return SACAlgorithm(env, eval_env, buffer, learner, loop_config(cfg), batch_size=a.batch_size, run_dir=run_dir)
