"""MBPO (Janner et al. 2019): a model-free learner (SAC) on a mix of real and model-generated data.

`python -m mbrl.train env=gym/Hopper-v5 model=ensemble algo=mbpo`     (any backbone: model=rssm too)

- the model is refit on the real data every `model_train_every` env steps (mbrl/algos/model_fit.py:
  held-out early stopping and elites for the ensemble; sequence updates for latent backbones);
- after each fit (and every `rollout_every` env steps), `rollout_batch` real starts (through `observe`)
  begin k-step rollouts under the current policy (mbrl/algos/dyna.py; with the ensemble, a random elite
  per sample and step: TS1, set by this algo's `group_defaults`); k follows the linear schedule
  `rollout_schedule = [start_step, end_step, k_min, k_max]`; the imagined transitions go into a second
  ReplayBuffer that keeps the last `model_retain` rollouts' worth of data;
- the learner does `train_ratio` updates per env step (the update-to-data ratio), each batch
  `real_ratio` real and the rest imagined. With a latent backbone the learner sees features.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from mbrl.algos.base import Algorithm, LoopConfig
from mbrl.algos.common import build_learner, build_model, loop_config, make_buffer, make_envs, to_dict
from mbrl.algos.dyna import Dyna, act_on_features
from mbrl.algos.model_fit import ModelFitter, fitter_from_config
from mbrl.errors import UserError
from mbrl.learners.base import Learner
from mbrl.models.base import WorldModel


class MBPO(Algorithm):
    name = "mbpo"

    def __init__(
        self,
        env,
        eval_env,
        buffer,
        model: WorldModel,
        fitter: ModelFitter,
        learner: Learner,
        loop: LoopConfig,
        batch_size: int = 256,
        real_ratio: float = 0.05,
        model_train_every: int = 250,
        rollout_every: Optional[int] = None,
        rollout_batch: int = 50_000,
        rollout_schedule: tuple = (0, 10_000, 1, 1),
        model_retain: int = 5,
        termination_threshold: float = 0.5,
        context: int = 16,
        run_dir=None,
    ):
        super().__init__(env, eval_env, buffer, loop, run_dir)
        if len(rollout_schedule) != 4:
            raise UserError(f"algo.rollout_schedule must be [start_step, end_step, k_min, k_max], got {list(rollout_schedule)}")
        self.model = model.to(self.device)
        self.fitter = fitter
        self.learner = learner.to(self.device)
        self.batch_size = int(batch_size)
        self.model_train_every = int(model_train_every)
        self.rollout_every = int(rollout_every or model_train_every)
        self.rollout_schedule = tuple(float(x) for x in rollout_schedule)
        kmax = int(max(self.rollout_schedule[2], self.rollout_schedule[3]))
        self.dyna = Dyna(model, buffer, env.single_action_space, batch_size=batch_size, real_ratio=real_ratio, rollout_batch=rollout_batch,
                         max_horizon=kmax, retain=model_retain, termination_threshold=termination_threshold, context=context,
                         seed=loop.seed, device=self.device)
        self._next_fit = 0
        self._next_rollout = 0
        self.rollout_length = int(self.rollout_schedule[2])

    def on_buffer_replaced(self) -> None:
        self.dyna.real = self.buffer

    def horizon_at(self, step: int) -> int:
        a, b, lo, hi = self.rollout_schedule
        frac = min(max((step - a) / max(b - a, 1.0), 0.0), 1.0)
        return int(lo + frac * (hi - lo))

    def rollout(self) -> dict[str, float]:
        self.rollout_length = k = self.horizon_at(self.env_steps)
        return self.dyna.rollout(lambda f: self.learner.act(f, explore=True), k)

    # ------------------------------------------------------------------ loop hooks
    def can_train(self) -> bool:
        if self.model.train_on == "sequences":
            return len(self.buffer) >= max(self.batch_size, self.num_envs * (self.fitter.seq_length + self.fitter.seq_batch))
        return len(self.buffer) >= self.batch_size

    def train_step(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.env_steps >= self._next_fit:
            metrics.update(self.fitter.fit(self.buffer))
            self._next_fit = self.env_steps + self.model_train_every
            self._next_rollout = self.env_steps  # fresh rollouts from the new model
        if self.env_steps >= self._next_rollout:
            metrics.update(self.rollout())
            self._next_rollout = self.env_steps + self.rollout_every
        metrics.update(self.learner.update(self.dyna.sample()))
        return metrics

    @torch.no_grad()
    def act(self, obs: Any, is_first: np.ndarray, state: Any, explore: bool):
        return act_on_features(self.model, self.learner, obs, is_first, state, explore, self.device)

    def modules(self) -> dict[str, Any]:
        return {"model": self.model, "model_fit": self.fitter, "learner": self.learner, "mbpo": _Counters(self)}


class _Counters:
    def __init__(self, algo: MBPO):
        self.algo = algo

    def state_dict(self) -> dict:
        return {"next_fit": self.algo._next_fit, "next_rollout": self.algo._next_rollout}

    def load_state_dict(self, sd: dict) -> None:
        # imagined data is not checkpointed: refit and roll out again right after a resume
        self.algo._next_fit, self.algo._next_rollout = 0, 0


def from_config(cfg: Any, run_dir: Optional[str] = None) -> MBPO:
    env, eval_env = make_envs(cfg)
    a = to_dict(cfg.algo)
    model = build_model(cfg, env, "algo=mbpo")
    fitter = fitter_from_config(model, a.get("fit"), int(cfg.seed))
    learner = build_learner(cfg, model.feat_dim, env.single_action_space, "algo=mbpo")
    keys = ("batch_size", "real_ratio", "model_train_every", "rollout_every", "rollout_batch", "rollout_schedule", "model_retain",
            "termination_threshold", "context")
    kw = {k: a[k] for k in keys if k in a and a[k] is not None}
    buffer = make_buffer(env, cfg, a.get("buffer_size", 1_000_000))
    return MBPO(env, eval_env, buffer, model, fitter, learner, loop_config(cfg), run_dir=run_dir, **kw)
