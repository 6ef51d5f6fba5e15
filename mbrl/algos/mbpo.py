"""MBPO (Janner et al. 2019): SAC on a mix of real and model-generated transitions.

`python -m mbrl.train env=gym/Hopper-v5 model=ensemble algo=mbpo`

- the ensemble is refit on all real data every `model_train_every` env steps (held-out early
  stopping, elites);
- after each fit (and every `rollout_every` env steps), `rollout_batch` real states start k-step
  model rollouts under the current SAC policy (a random elite per sample and step, TS1); k follows
  the linear schedule `rollout_schedule = [start_step, end_step, k_min, k_max]`; the imagined
  transitions go into a second ReplayBuffer (`add_batch`) that keeps the last `model_retain`
  rollouts' worth of data;
- SAC does `train_ratio` updates per env step (the update-to-data ratio), each batch
  `real_ratio` real and the rest imagined.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from mbrl.algos.base import Algorithm, LoopConfig
from mbrl.algos.common import continuous_action_dim, loop_config, make_buffer, make_envs, to_dict, vector_obs_dim
from mbrl.algos.pets import MODEL_FIT_KEYS, buffer_transitions, model_fit_kwargs, model_from_config
from mbrl.data import Batch, ReplayBuffer
from mbrl.learners.sac import SAC
from mbrl.models.ensemble import EnsembleModel


class MBPOConfigError(ValueError):
    pass


class MBPO(Algorithm):
    name = "mbpo"

    def __init__(
        self,
        env,
        eval_env,
        buffer,
        model: EnsembleModel,
        learner: SAC,
        loop: LoopConfig,
        batch_size: int = 256,
        real_ratio: float = 0.05,
        model_train_every: int = 250,
        rollout_every: Optional[int] = None,
        rollout_batch: int = 50_000,
        rollout_schedule: tuple = (0, 10_000, 1, 1),
        model_retain: int = 5,
        model_epochs: int = 50,
        model_patience: int = 5,
        model_batch_size: int = 256,
        model_max_updates: Optional[int] = None,
        model_min_updates: int = 0,
        holdout_ratio: float = 0.2,
        termination_threshold: float = 0.5,
        run_dir=None,
    ):
        super().__init__(env, eval_env, buffer, loop, run_dir)
        if not 0.0 <= real_ratio <= 1.0:
            raise MBPOConfigError(f"real_ratio must be in [0, 1], got {real_ratio}")
        if len(rollout_schedule) != 4:
            raise MBPOConfigError(f"rollout_schedule must be [start_step, end_step, k_min, k_max], got {list(rollout_schedule)}")
        self.model = model.to(self.device)
        self.model.propagation = "ts1"
        self.learner = learner.to(self.device)
        self.batch_size, self.real_ratio = int(batch_size), float(real_ratio)
        self.model_train_every = int(model_train_every)
        self.rollout_every = int(rollout_every or model_train_every)
        self.rollout_batch = int(rollout_batch)
        self.rollout_schedule = tuple(float(x) for x in rollout_schedule)
        self.model_retain = int(model_retain)
        self.fit_kw = model_fit_kwargs(model_epochs, model_patience, model_batch_size, model_max_updates, model_min_updates, holdout_ratio)
        self.termination_threshold = float(termination_threshold)
        kmax = int(max(self.rollout_schedule[2], self.rollout_schedule[3]))
        cap = 2 * self.rollout_batch * kmax * self.model_retain  # contiguous=False: two entries per transition
        self.model_buffer = ReplayBuffer(cap, env.single_observation_space, env.single_action_space, num_envs=1, seed=loop.seed + 1, device=self.device)
        self._next_fit = 0
        self._next_rollout = 0
        self.rollout_length = int(self.rollout_schedule[2])

    def on_buffer_replaced(self) -> None:
        pass

    def horizon_at(self, step: int) -> int:
        a, b, lo, hi = self.rollout_schedule
        frac = min(max((step - a) / max(b - a, 1.0), 0.0), 1.0)
        return int(lo + frac * (hi - lo))

    # ------------------------------------------------------------------ model + rollouts
    def fit_model(self) -> dict[str, float]:
        return self.model.fit(buffer_transitions(self.buffer), **self.fit_kw)

    @torch.no_grad()
    def rollout(self) -> dict[str, float]:
        k = self.horizon_at(self.env_steps)
        self.rollout_length = k
        n = min(self.rollout_batch, len(self.buffer))
        obs = self.buffer.sample(n).obs.float()
        state = self.model.start_states(obs)
        alive = torch.ones(n, dtype=torch.bool, device=obs.device)
        outs = []
        for _ in range(k):
            act = self.learner.act(state.obs, explore=True)
            nxt = self.model.step(state, act)
            term = nxt.terminated > self.termination_threshold
            idx = alive.nonzero().squeeze(-1)
            outs.append((state.obs[idx], act[idx], nxt.reward[idx], nxt.obs[idx], term[idx]))
            alive = alive & ~term
            state = nxt
            if not bool(alive.any()):
                break
        o, a, r, no, te = (torch.cat(x).cpu().numpy() for x in zip(*outs))
        self.model_buffer.add_batch(o.astype(np.float32), a.astype(np.float32), r.astype(np.float32), no.astype(np.float32), te, np.zeros_like(te), contiguous=False)
        return {"mbpo/rollout_length": float(k), "mbpo/imagined": float(len(r)), "mbpo/model_buffer": float(len(self.model_buffer)), "mbpo/imagined_term": float(te.mean())}

    def sample_mix(self) -> Batch:
        n_real = int(round(self.batch_size * self.real_ratio))
        if len(self.model_buffer) == 0:
            n_real = self.batch_size
        n_model = self.batch_size - n_real
        parts = []
        keys = ("obs", "action", "reward", "next_obs", "terminated")
        if n_real:
            b = self.buffer.sample(n_real)
            parts.append({k: b[k] for k in keys})
        if n_model:
            b = self.model_buffer.sample(n_model)
            parts.append({k: b[k] for k in keys})
        return Batch({k: torch.cat([p[k].float() if k != "terminated" else p[k].float() for p in parts]) for k in keys})

    # ------------------------------------------------------------------ loop hooks
    def can_train(self) -> bool:
        return len(self.buffer) >= self.batch_size

    def train_step(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.env_steps >= self._next_fit:
            metrics.update(self.fit_model())
            self._next_fit = self.env_steps + self.model_train_every
            self._next_rollout = self.env_steps  # fresh rollouts from the new model
        if self.env_steps >= self._next_rollout:
            metrics.update(self.rollout())
            self._next_rollout = self.env_steps + self.rollout_every
        metrics.update(self.learner.update(self.sample_mix()))
        return metrics

    def act(self, obs: Any, is_first: np.ndarray, state: Any, explore: bool):
        a = self.learner.act(torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.device), explore=explore)
        return a.cpu().numpy(), state

    def modules(self) -> dict[str, Any]:
        return {"model": self.model, "learner": self.learner, "mbpo": _Counters(self)}


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
    obs_dim = vector_obs_dim(env.single_observation_space, "algo=mbpo")
    act_dim = continuous_action_dim(env.single_action_space, "algo=mbpo")
    a = to_dict(cfg.algo)
    model = model_from_config(cfg, obs_dim, act_dim, "algo=mbpo")
    learner = SAC(obs_dim, act_dim, **to_dict(a.get("sac")))
    keys = ("batch_size", "real_ratio", "model_train_every", "rollout_every", "rollout_batch", "rollout_schedule", "model_retain",
            "termination_threshold") + MODEL_FIT_KEYS
    kw = {k: a[k] for k in keys if k in a and a[k] is not None}
    buffer = make_buffer(env, cfg, a.get("buffer_size", 1_000_000))
    return MBPO(env, eval_env, buffer, model, learner, loop_config(cfg), run_dir=run_dir, **kw)
