"""The offline loop: no env interaction; `steps` gradient steps on a fixed dataset, evaluation in the
real env every `eval_every` steps (return and D4RL/Minari normalised score), logging, checkpoints and
resume from the shared `Algorithm` (mbrl/algos/base.py). In offline runs the loop's step counter
(`env_steps` in logs and checkpoints) counts gradient steps.

`OfflineAlgorithm` is the base; `LearnerOffline` trains one model-free `Learner` on dataset batches
(IQL, CQL, TD3+BC, BC); `ModelBasedOffline` (mbrl/algos/mopo.py) adds a world model and penalised
model rollouts (MOPO, MOReL, MOBILE, RAVL).
"""
from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np
import torch

from mbrl.algos.base import Algorithm, LoopConfig
from mbrl.algos.common import build_learner, setting
from mbrl.data.offline import OfflineDataset, is_offline, load
from mbrl.errors import UserError


class OfflineAlgorithm(Algorithm):
    name = "offline"

    def __init__(self, eval_env, dataset: OfflineDataset, buffer, loop: LoopConfig, batch_size: int = 256, run_dir=None):
        super().__init__(eval_env, eval_env, buffer, loop, run_dir)
        self.dataset = dataset
        self.batch_size = int(batch_size)

    def act(self, obs: Any, is_first: np.ndarray, state: Any, explore: bool):
        a = self.policy(torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.device), explore)
        return a.cpu().numpy(), state

    def policy(self, obs: torch.Tensor, explore: bool) -> torch.Tensor:
        raise NotImplementedError

    def _run(self) -> dict[str, float]:
        loop = self.loop
        t0, u0 = time.time(), self.updates
        last_eval: dict[str, float] = {}
        if not self._pretrained:
            self._pretrained = True
            self.logger.accumulate(self.checked(self.pretrain()))
        while self.updates < loop.steps:
            self.logger.accumulate(self.checked(self.train_step()))
            self.updates += 1
            self.env_steps = self.updates
            self.logger.progress(1)
            last_eval = self.periodic(self.updates, lambda: {"time/updates_per_s": (self.updates - u0) / max(time.time() - t0, 1e-9)}) or last_eval
        return self.finish(self.updates, last_eval)

    @torch.no_grad()
    def evaluate(self, episodes: Optional[int] = None) -> dict[str, float]:
        m = super().evaluate(episodes)
        if self.dataset.ref_scores is not None:
            extra = {"eval/normalized_score": float(self.dataset.normalized_score(m["eval/return"]))}
            m.update(extra)
            if self.logger is not None:
                self.logger.log(self.env_steps, extra)
        return m


class LearnerOffline(OfflineAlgorithm):
    """One model-free Learner on dataset batches."""

    def __init__(self, eval_env, dataset, buffer, learner, loop, batch_size=256, run_dir=None, name: str = "offline"):
        super().__init__(eval_env, dataset, buffer, loop, batch_size, run_dir)
        self.name = name
        self.learner = learner.to(self.device)
        if hasattr(learner, "obs_norm"):
            learner.obs_norm.set(*obs_stats(dataset))

    def policy(self, obs, explore):
        return self.learner.act(obs, explore=False)

    def train_step(self) -> dict[str, float]:
        return self.learner.update(self.buffer.sample(self.batch_size))

    def modules(self) -> dict[str, Any]:
        return {"learner": self.learner}


# ------------------------------------------------------------------------------- config helpers

def obs_stats(dataset: OfflineDataset) -> tuple[np.ndarray, np.ndarray]:
    o = dataset.obs.astype(np.float64)
    return o.mean(0), o.std(0) + 1e-3


def dataset_and_env(cfg: Any):
    """Load the dataset that `env=d4rl/...` or `env=minari/...` names, and its evaluation env."""
    from mbrl import envs

    if not is_offline(str(cfg.env)):
        raise UserError(f"algo={cfg.algo.name} is offline and needs a dataset: env=d4rl/<name> (e.g. d4rl/hopper-medium-v2, file from "
                           f"dataset_path= or $D4RL_DATASET_DIR) or env=minari/<dataset_id>; got env={cfg.env}")
    ds = load(str(cfg.env), setting(cfg, "dataset_path"))
    eval_name = setting(cfg, "eval_env") or ds.eval_env
    if not eval_name:
        raise UserError(f"dataset {ds.name!r} names no evaluation env; pass algo.eval_env=<suite/task> (e.g. gym/Hopper-v5)")
    n_eval = max(1, min(int(setting(cfg, "eval_episodes", 5)), 10))
    eval_env = envs.make(str(eval_name), seed=int(cfg.seed) + 10_000, num_envs=n_eval)
    obs_dim = int(np.prod(ds.obs.shape[1:]))
    space = eval_env.single_observation_space
    if tuple(space.shape) != tuple(ds.obs.shape[1:]):
        raise UserError(f"dataset {ds.name!r} has observations of shape {ds.obs.shape[1:]} but eval env {eval_name} gives {space.shape}")
    if tuple(eval_env.single_action_space.shape) != tuple(ds.action.shape[1:]):
        raise UserError(f"dataset {ds.name!r} has actions of shape {ds.action.shape[1:]} but eval env {eval_name} takes {eval_env.single_action_space.shape}")
    if ds.action.ndim != 2:
        raise UserError(f"offline algorithms here need continuous actions; dataset {ds.name!r} has discrete actions "
                        f"(valid: a dataset of float action vectors, e.g. d4rl/hopper-medium-v2)")
    buffer = ds.to_buffer(capacity=2 * len(ds) + 16, seed=int(cfg.seed), device=str(setting(cfg, "device", "cpu")),
                          obs_space=space, action_space=eval_env.single_action_space)
    return ds, eval_env, buffer, obs_dim, int(ds.action.shape[1])


def offline_loop_config(cfg: Any) -> LoopConfig:
    from mbrl.algos.common import loop_config

    lc = loop_config(cfg)
    lc.prefill = 0
    lc.save_buffer = False  # the dataset is re-read from its file; nothing to save
    return lc


def learner_from_config(cfg: Any, run_dir=None) -> LearnerOffline:
    """A model-free offline algo (`algo=iql|cql|td3bc|bc`): its learner (`learner=`, implied by the
    algo) on dataset batches."""
    ds, eval_env, buffer, obs_dim, _ = dataset_and_env(cfg)
    name = str(cfg.algo.name)
    learner = build_learner(cfg, obs_dim, eval_env.single_action_space, f"algo={name}")
    return LearnerOffline(eval_env, ds, buffer, learner, offline_loop_config(cfg), batch_size=int(cfg.algo.batch_size), run_dir=run_dir, name=name)
