"""Model-based offline RL with uncertainty-penalised rollouts, and MOPO itself.

`ModelBasedOffline` (shared by MOPO, MOReL, MOBILE, RAVL), on any backbone that provides the
uncertainty signals the method needs (`model=ensemble`; or any backbone with `model.heads=5`):
1. `pretrain`: fit the world model on the whole dataset (mbrl/algos/model_fit.py).
2. every `rollout_every` gradient steps: `rollout_batch` starts from the dataset (through `observe`),
   `rollout_horizon` imagined steps under the current policy (mbrl/algos/dyna.py, the module MBPO uses
   too); each step's reward is replaced by `penalty(traj)` — the method's pessimism over named
   uncertainty signals — and rows that terminate (or halt, MOReL) stop. The transitions go into an
   imagined buffer that holds the last `model_retain` rollouts' worth of data.
3. every gradient step: the learner (SAC) on a batch with a `real_ratio` fraction of real data, the
   rest imagined (in the model's feature space for latent backbones).

MOPO (Yu et al. 2020): r̃ = r̂ − λ · aleatoric, the largest predicted noise std over the members
(`uncertainty(...)["aleatoric"]`), λ = `penalty_coef`.
"""
from __future__ import annotations

import sys

from typing import Any, Optional

import numpy as np
import torch

from mbrl.algos.common import build_learner, build_model, to_dict
from mbrl.algos.dyna import Dyna, act_on_features
from mbrl.algos.model_fit import ModelFitter, fitter_from_config
from mbrl.algos.offline import OfflineAlgorithm, dataset_and_env, offline_loop_config
from mbrl.errors import UserError
from mbrl.models import require_signals
from mbrl.models.base import Trajectory, WorldModel


class ModelBasedOffline(OfflineAlgorithm):
    name = "model_based_offline"
    #: uncertainty signals the penalty reads (checked against the backbone at build time)
    needs: tuple[str, ...] = ()

    def __init__(self, eval_env, dataset, buffer, model: WorldModel, fitter: Optional[ModelFitter], learner, loop, batch_size: int = 256, run_dir=None,
                 rollout_horizon: int = 5, rollout_batch: int = 5000, rollout_every: int = 1000, model_retain: int = 5,
                 real_ratio: float = 0.05, penalty_coef: float = 1.0, context: int = 16, **extra: Any):
        super().__init__(eval_env, dataset, buffer, loop, batch_size, run_dir)
        if rollout_horizon < 1 or rollout_every < 1:
            raise UserError(f"algo.rollout_horizon={rollout_horizon}, algo.rollout_every={rollout_every}; valid: both >= 1")
        self.model = model.to(self.device)
        self.fitter = fitter
        self.learner = learner.to(self.device)
        self.rollout_horizon, self.rollout_every = int(rollout_horizon), int(rollout_every)
        self.penalty_coef = float(penalty_coef)
        self.extra = extra
        require_signals(model, self.signals(), f"algo={self.name}")
        if int(rollout_batch) > len(buffer) > 0:  # checked before the model fit (pretrain), not after it
            print(f"warning: algo.rollout_batch={int(rollout_batch)} is larger than the dataset ({len(buffer)} transitions); "
                  f"each rollout starts from {len(buffer)} dataset states", file=sys.stderr)
            rollout_batch = len(buffer)
        self.dyna = Dyna(model, buffer, eval_env.single_action_space, batch_size=batch_size, real_ratio=real_ratio, rollout_batch=rollout_batch,
                         max_horizon=rollout_horizon, retain=model_retain, context=context, signals=self.signals(), penalize=self.penalty,
                         seed=loop.seed, device=self.device)

    def signals(self) -> tuple[str, ...]:
        return self.needs

    # ------------------------------------------------------------------ Algorithm hooks
    @torch.no_grad()
    def act(self, obs: Any, is_first: np.ndarray, state: Any, explore: bool):
        return act_on_features(self.model, self.learner, obs, is_first, state, False, self.device)

    def modules(self) -> dict[str, Any]:
        mods = {"model": self.model, "model_fit": self.fitter, "learner": self.learner}
        return {k: v for k, v in mods.items() if v is not None}

    def pretrain(self) -> dict[str, float]:
        m = self.fitter.fit(self.buffer) if self.fitter is not None else {}  # None: a model with nothing to fit (model=oracle)
        self.calibrate()
        return m

    def calibrate(self) -> None:
        """Called once after the model is fitted (MOReL sets its halting threshold here)."""

    def train_step(self) -> dict[str, float]:
        m: dict[str, float] = {}
        if self.updates % self.rollout_every == 0 or len(self.dyna.imagined) < self.batch_size:
            m.update(self.dyna.rollout(lambda f: self.learner.act(f, explore=True), self.rollout_horizon))
        m.update(self.learner.update(self.dyna.sample()))
        return m

    # ------------------------------------------------------------------ the pessimism
    def penalty(self, traj: Trajectory) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """(penalised reward [k, n], halt [k, n] bool, metrics) of an imagined trajectory."""
        raise NotImplementedError


class MOPO(ModelBasedOffline):
    name = "mopo"
    needs = ("aleatoric",)

    def penalty(self, traj):
        r = traj.rewards.float() - self.penalty_coef * traj.signals["aleatoric"].float()
        return r, torch.zeros_like(r, dtype=torch.bool), {}


# --------------------------------------------------------------------------------- config

def model_based_from_config(cfg: Any, run_dir, cls):
    ds, eval_env, buffer, _, _ = dataset_and_env(cfg)
    a = to_dict(cfg.algo)
    if cfg.get("model") is not None and "env" in cfg.model and cfg.model.env is None:  # a simulator model (model=oracle): the dataset's env
        cfg.model.env = str(cfg.algo.get("eval_env") or ds.eval_env)
    model = build_model(cfg, (eval_env.single_observation_space, eval_env.single_action_space), f"algo={cls.name}")
    trainable = any(p.requires_grad for p in model.parameters())
    fitter = fitter_from_config(model, a.get("fit"), int(cfg.seed)) if trainable else None
    learner = build_learner(cfg, model.feat_dim, eval_env.single_action_space, f"algo={cls.name}")
    keys = ("rollout_horizon", "rollout_batch", "rollout_every", "model_retain", "real_ratio", "penalty_coef", "context")
    kw = {k: a[k] for k in keys if k in a and a[k] is not None}
    kw.update(to_dict(a.get("extra")))
    return cls(eval_env, ds, buffer, model, fitter, learner, offline_loop_config(cfg), batch_size=int(a["batch_size"]), run_dir=run_dir, **kw)


def from_config(cfg, run_dir=None):
    return model_based_from_config(cfg, run_dir, MOPO)
