"""Model-based offline RL with uncertainty-penalised rollouts, and MOPO itself.

`ModelBasedOffline` (shared by MOPO, MOReL, MOBILE, RAVL):
1. `pretrain`: fit the world model (`model=ensemble`, mbrl/models/ensemble.py) on the whole dataset
   (held-out early stopping, elites).
2. every `rollout_every` gradient steps: `rollout_batch` start states from the dataset, `rollout_horizon`
   model steps under the current SAC policy; each step's reward is replaced by `penalize(...)` (the
   subclass's pessimism) and rows that terminate (or halt, MOReL) stop. The transitions go into a
   model buffer that holds the last `model_retain` rollouts' worth of data.
3. every gradient step: SAC on a batch with a `real_ratio` fraction from the dataset, the rest from the
   model buffer.

MOPO (Yu et al. 2020): r̃ = r̂ − λ · max_i ‖σ_i(s, a)‖ — the largest aleatoric std over the elites
(`EnsembleModel.aleatoric`), λ = `penalty_coef`.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from mbrl.algos.offline import OfflineAlgorithm, dataset_and_env, offline_loop_config, setting
from mbrl.algos.common import to_dict
from mbrl.data import Batch, ReplayBuffer
from mbrl.learners.sac import SAC


class ModelBasedOffline(OfflineAlgorithm):
    name = "model_based_offline"

    def __init__(self, eval_env, dataset, buffer, model, learner: SAC, loop, batch_size: int = 256, run_dir=None,
                 rollout_horizon: int = 5, rollout_batch: int = 5000, rollout_every: int = 1000, model_retain: int = 5,
                 real_ratio: float = 0.05, penalty_coef: float = 1.0, model_epochs: int = 100, model_max_updates: Optional[int] = None,
                 model_batch_size: int = 256, **extra: Any):
        super().__init__(eval_env, dataset, buffer, loop, batch_size, run_dir)
        if not 0.0 <= real_ratio <= 1.0:
            raise ValueError(f"real_ratio must be in [0, 1], got {real_ratio}")
        if rollout_horizon < 1:
            raise ValueError(f"rollout_horizon must be >= 1, got {rollout_horizon}")
        self.model = model.to(self.device)
        self.learner = learner.to(self.device)
        self.rollout_horizon, self.rollout_batch, self.rollout_every = int(rollout_horizon), int(rollout_batch), int(rollout_every)
        self.real_ratio, self.penalty_coef = float(real_ratio), float(penalty_coef)
        self.model_epochs, self.model_max_updates, self.model_batch_size = int(model_epochs), model_max_updates, int(model_batch_size)
        self.model_retain = int(model_retain)
        self.extra = extra
        self.model_buffer = self._new_model_buffer()

    def _new_model_buffer(self) -> ReplayBuffer:
        cap = 2 * self.rollout_batch * self.rollout_horizon * self.model_retain + 16
        return ReplayBuffer(cap, self.buffer.obs_space, self.buffer.action_space, seed=self.loop.seed + 1, device=self.device)

    # ------------------------------------------------------------------ Algorithm hooks
    def policy(self, obs, explore):
        return self.learner.act(obs, explore=explore)

    def modules(self) -> dict[str, Any]:
        return {"model": self.model, "learner": self.learner}

    def pretrain(self) -> dict[str, float]:
        ds = self.dataset
        data = Batch.from_numpy({"obs": ds.obs.astype(np.float32), "action": ds.scaled_actions(), "reward": ds.reward.astype(np.float32),
                                 "next_obs": ds.next_obs.astype(np.float32), "terminated": ds.terminated.astype(np.float32)})
        m = self.model.fit(data, epochs=self.model_epochs, batch_size=self.model_batch_size, max_updates=self.model_max_updates)
        self.calibrate()
        return m

    def calibrate(self) -> None:
        """Called once after the model is fitted (MOReL sets its halting threshold here)."""

    def train_step(self) -> dict[str, float]:
        m: dict[str, float] = {}
        if self.updates % self.rollout_every == 0 or len(self.model_buffer) < self.batch_size:
            m.update(self.rollout())
        n_real = int(round(self.batch_size * self.real_ratio)) if len(self.model_buffer) else self.batch_size
        real = self.buffer.sample(n_real) if n_real else None
        if n_real < self.batch_size:
            fake = self.model_buffer.sample(self.batch_size - n_real)
            keys = ("obs", "action", "reward", "next_obs", "terminated")
            batch = Batch({k: torch.cat([real[k].to(fake[k].dtype), fake[k]]) for k in keys}) if real is not None else Batch({k: fake[k] for k in keys})
        else:
            batch = real
        m.update(self.learner.update(batch))
        return m

    # ------------------------------------------------------------------ rollouts
    def penalize(self, state, action: torch.Tensor, next_state) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """(penalised reward [B], halt [B] bool, metrics) of the model transitions state -(action)-> next_state."""
        raise NotImplementedError

    @torch.no_grad()
    def rollout(self) -> dict[str, float]:
        start = self.buffer.sample(self.rollout_batch).obs.float().to(self.device)
        state = self.model.start_states(start)
        alive = torch.ones(start.shape[0], dtype=torch.bool, device=self.device)
        n, pen_sum, rew_sum, halted = 0, 0.0, 0.0, 0
        for _ in range(self.rollout_horizon):
            obs = state.obs
            action = self.learner.act(obs, explore=True)
            nxt = self.model.step(state, action)
            reward, halt, _ = self.penalize(state, action, nxt)
            term = (nxt.terminated > 0.5) | halt
            idx = alive.nonzero().squeeze(-1)
            if idx.numel() == 0:
                break
            self.model_buffer.add_batch(obs[idx].cpu().numpy(), action[idx].cpu().numpy(), reward[idx].cpu().numpy(), nxt.obs[idx].cpu().numpy(),
                                        term[idx].cpu().numpy(), np.zeros(idx.numel(), bool), contiguous=False)
            n += idx.numel()
            rew_sum += float(nxt.reward[idx].sum())
            pen_sum += float((nxt.reward[idx] - reward[idx]).sum())
            halted += int(halt[idx].sum())
            alive &= ~term
            state = nxt
        n = max(n, 1)
        return {"rollout/transitions": float(n), "rollout/model_reward": rew_sum / n, "rollout/penalty": pen_sum / n, "rollout/halted": halted / n}


class MOPO(ModelBasedOffline):
    name = "mopo"

    def penalize(self, state, action, next_state):
        u = self.model.aleatoric(state, action)
        return next_state.reward - self.penalty_coef * u, torch.zeros_like(u, dtype=torch.bool), {}


# --------------------------------------------------------------------------------- config

def model_based_from_config(cfg: Any, run_dir, cls, learner_cls=SAC):
    from mbrl.models import ensemble as ens

    ds, eval_env, buffer, obs_dim, act_dim = dataset_and_env(cfg)
    mcfg = cfg.get("model")
    if mcfg is not None and mcfg.get("name") not in (None, "ensemble"):
        raise ValueError(f"algo={cfg.algo.name} needs model=ensemble (per-member predictions and aleatoric std); got model={mcfg.get('name')}")
    model_kw = to_dict(mcfg) if mcfg is not None else {}
    model_kw.update(to_dict(cfg.algo.get("model_overrides")))
    model = ens.from_config(model_kw, obs_dim, act_dim, seed=int(cfg.seed))
    a = to_dict(cfg.algo)
    learner = learner_cls(obs_dim, act_dim, **to_dict(a.get("sac")))
    keys = ("rollout_horizon", "rollout_batch", "rollout_every", "model_retain", "real_ratio", "penalty_coef", "model_epochs", "model_max_updates", "model_batch_size")
    kw = {k: a[k] for k in keys if k in a and a[k] is not None}
    kw.update(to_dict(a.get("extra")))
    return cls(eval_env, ds, buffer, model, learner, offline_loop_config(cfg), batch_size=int(a["batch_size"]), run_dir=run_dir, **kw)


def from_config(cfg, run_dir=None):
    return model_based_from_config(cfg, run_dir, MOPO)
