"""PETS (Chua et al. 2018): MPC over a probabilistic ensemble with trajectory sampling.

`python -m mbrl.train env=gym/InvertedPendulum-v5 model=ensemble algo=pets [algo.planner=cem]`

Each env step, the planner (random / cem / icem / mppi, warm-started per env) optimises an
action sequence against `make_score_fn(model, state, particles)`: every candidate × particle
goes through the model in one batched step per horizon step (bf16 matmuls on CPU by default,
`model.planning_dtype`). The model is refit on the whole replay buffer (held-out early
stopping, elites) after prefill, at every episode end and every `fit_every` env steps.
Rewards and terminations are learned by the model; nothing is env-specific.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from mbrl.algos.base import Algorithm, LoopConfig
from mbrl.algos.common import loop_config, make_buffer, make_envs, to_dict, vector_obs_dim
from mbrl.algos.model_score import make_score_fn
from mbrl.data.batch import Batch
from mbrl.learners.value import TerminalValue
from mbrl.models.ensemble import EnsembleModel
from mbrl.models.ensemble import from_config as ensemble_from_config
from mbrl.planners import PLANNERS, make_planner


class PETSConfigError(ValueError):
    pass


def buffer_transitions(buffer) -> Batch:
    """Every stored transition of a ReplayBuffer as one Batch [N] (obs, action, reward, next_obs,
    terminated) — the model is fit on all data, as in PETS / MBPO."""
    if hasattr(buffer, "all_transitions"):
        return buffer.all_transitions()
    i = np.flatnonzero(buffer._has_action.reshape(-1))
    c = buffer.stream_capacity
    j = (i // c) * c + (i % c + 1) % c
    return Batch(
        obs=buffer._gather_obs(i), action=buffer._gather(buffer._action, i), reward=buffer._gather(buffer._reward, j),
        next_obs=buffer._gather_obs(j), terminated=buffer._gather(buffer._terminated, j),
    )


# config keys of the model fit, shared by the algos that refit an ensemble on their buffer (PETS, MBPO)
MODEL_FIT_KEYS = ("model_epochs", "model_patience", "model_batch_size", "model_max_updates", "model_min_updates", "holdout_ratio")


# `algo.value_options` keys (mbrl.learners.value.TerminalValue arguments)
VALUE_KEYS = ("hidden", "layers", "lam", "lr", "updates", "batch_size", "refresh")


def model_fit_kwargs(model_epochs: int, model_patience: int, model_batch_size: int, model_max_updates: Optional[int],
                     model_min_updates: int, holdout_ratio: float) -> dict:
    """`EnsembleModel.fit` keyword arguments from an algo's `model_*` options."""
    return dict(epochs=int(model_epochs), patience=int(model_patience), batch_size=int(model_batch_size), max_updates=model_max_updates,
                min_updates=int(model_min_updates), holdout_ratio=float(holdout_ratio))


class PETS(Algorithm):
    name = "pets"

    def __init__(
        self,
        env,
        eval_env,
        buffer,
        model: EnsembleModel,
        loop: LoopConfig,
        planner: str = "icem",
        planner_options: Optional[dict] = None,
        horizon: int = 15,
        particles: int = 20,
        discount: float = 1.0,
        fit_on_episode_end: bool = True,
        fit_every: int = 1000,
        model_epochs: int = 25,
        model_patience: int = 5,
        model_batch_size: int = 256,
        model_max_updates: Optional[int] = None,
        model_min_updates: int = 0,
        holdout_ratio: float = 0.2,
        terminal_value: bool = False,
        value_options: Optional[dict] = None,
        run_dir=None,
    ):
        super().__init__(env, eval_env, buffer, loop, run_dir)
        if self.discrete:
            raise PETSConfigError(f"algo=pets needs continuous actions (a Box); this env has {self.action_space}. Valid for discrete actions: algo=dreamer")
        if planner not in PLANNERS:
            raise PETSConfigError(f"unknown planner {planner!r}; valid: {', '.join(PLANNERS)}")
        self.model = model.to(self.device)
        self.action_dim = int(self.action_space.shape[0])
        self.planner_name, self.planner_options = planner, dict(planner_options or {})
        make_planner(planner, self.action_dim, **self.planner_options)  # validate options now
        self.horizon, self.particles, self.discount = int(horizon), int(particles), float(discount)
        self.fit_on_episode_end, self.fit_every = bool(fit_on_episode_end), int(fit_every)
        self.fit_kw = model_fit_kwargs(model_epochs, model_patience, model_batch_size, model_max_updates, model_min_updates, holdout_ratio)
        self.low = torch.as_tensor(self.action_space.low, dtype=torch.float32, device=self.device)
        self.high = torch.as_tensor(self.action_space.high, dtype=torch.float32, device=self.device)
        self.value: Optional[TerminalValue] = None
        if terminal_value:
            if not self.discount < 1.0:
                raise PETSConfigError(f"algo.terminal_value=true needs algo.discount < 1 (the value's γ); got discount={self.discount}. Valid: e.g. algo.discount=0.99")
            opts = dict(value_options or {})
            bad = sorted(set(opts) - set(VALUE_KEYS))
            if bad:
                raise PETSConfigError(f"unknown algo.value_options {bad}; valid: {', '.join(VALUE_KEYS)}")
            self.value = TerminalValue(self.model.obs_dim, gamma=self.discount, seed=int(loop.seed), **opts).to(self.device)
        self.fitted = False
        self.fits = 0
        self._steps_since_fit = 0
        self._seed = int(loop.seed)

    # ------------------------------------------------------------------ model
    def fit_model(self) -> dict[str, float]:
        data = buffer_transitions(self.buffer)
        m = self.model.fit(data, **self.fit_kw)
        if self.value is not None:
            m.update(self.value.fit(data))
        self.fitted = True
        self.fits += 1
        self._steps_since_fit = 0
        m["model/fits"] = float(self.fits)
        return m

    def pretrain(self) -> dict[str, float]:
        return self.fit_model()

    def train_step(self) -> dict[str, float]:
        self._steps_since_fit += 1
        if self.fit_every and self._steps_since_fit >= self.fit_every:
            return self.fit_model()
        return {}

    def end_of_episode(self, env_ids: np.ndarray) -> None:
        if self.fit_on_episode_end and self._pretrained and len(self.buffer) > 0 and self._steps_since_fit > 0:
            m = self.fit_model()
            if self.logger is not None:
                self.logger.accumulate(m)

    # ------------------------------------------------------------------ acting
    def new_planner(self, i: int):
        return make_planner(self.planner_name, self.action_dim, device=self.device, seed=self._seed * 1000 + i + 7919 * self.fits, **self.planner_options)

    def plan(self, obs: np.ndarray, planner) -> torch.Tensor:
        start = self.model.start_states(torch.as_tensor(obs, dtype=torch.float32, device=self.device).reshape(1, -1))
        score = make_score_fn(self.model, start, self.particles, self.discount, terminal_value=self.value)
        return planner.plan(score, self.low, self.high, self.horizon)

    @torch.no_grad()
    def act(self, obs: Any, is_first: np.ndarray, state: Any, explore: bool):
        obs = np.asarray(obs, dtype=np.float32)
        n = obs.shape[0]
        if not self.fitted:
            return np.stack([self.action_space.sample() for _ in range(n)]), state
        if state is None or len(state) != n:
            state = [self.new_planner(i) for i in range(n)]
        out = np.empty((n, self.action_dim), dtype=np.float32)
        for i in range(n):  # one plan per env (each plan batches all candidates × particles)
            if is_first[i]:
                state[i].reset()
            out[i] = self.plan(obs[i], state[i])[0].cpu().numpy()
        return out, state

    def modules(self) -> dict[str, Any]:
        mods = {"model": self.model, "pets": _Counters(self)}
        if self.value is not None:
            mods["value"], mods["value_optim"] = self.value, self.value.optimizer
        return mods


class _Counters:
    """Checkpointed PETS bookkeeping."""

    def __init__(self, algo: PETS):
        self.algo = algo

    def state_dict(self) -> dict:
        return {"fitted": self.algo.fitted, "fits": self.algo.fits, "steps_since_fit": self.algo._steps_since_fit}

    def load_state_dict(self, sd: dict) -> None:
        self.algo.fitted, self.algo.fits, self.algo._steps_since_fit = sd["fitted"], sd["fits"], sd["steps_since_fit"]


def model_from_config(cfg: Any, obs_dim: int, act_dim: int, who: str) -> EnsembleModel:
    mcfg = cfg.get("model")
    if mcfg is not None and mcfg.get("name") not in (None, "ensemble"):
        raise PETSConfigError(f"{who} needs model=ensemble (particles over a probabilistic ensemble); got model={mcfg.get('name')}")
    kw = to_dict(mcfg) if mcfg is not None else {}
    return ensemble_from_config(kw, obs_dim, act_dim, seed=int(cfg.seed))


def from_config(cfg: Any, run_dir: Optional[str] = None) -> PETS:
    env, eval_env = make_envs(cfg)
    if hasattr(env.single_action_space, "n"):
        raise PETSConfigError(f"algo=pets needs continuous actions (a Box); env {cfg.env} has {env.single_action_space}. Valid for discrete actions: algo=dreamer")
    obs_dim = vector_obs_dim(env.single_observation_space, "algo=pets")
    act_dim = int(env.single_action_space.shape[0])
    a = to_dict(cfg.algo)
    model = model_from_config(cfg, obs_dim, act_dim, "algo=pets")
    name = a.get("planner", "icem")
    opts = (a.get("planner_options") or {}).get(name, {})
    keys = ("horizon", "particles", "discount", "fit_on_episode_end", "fit_every", "terminal_value", "value_options") + MODEL_FIT_KEYS
    kw = {k: a[k] for k in keys if k in a and a[k] is not None}
    buffer = make_buffer(env, cfg, a.get("buffer_size", 1_000_000))
    return PETS(env, eval_env, buffer, model, loop_config(cfg), planner=name, planner_options=opts, run_dir=run_dir, **kw)
