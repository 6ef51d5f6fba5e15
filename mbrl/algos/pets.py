"""PETS (Chua et al. 2018) and, on a latent backbone, PlaNet-style latent MPC (Hafner et al. 2019).

`python -m mbrl.train env=gym/InvertedPendulum-v5 model=ensemble algo=pets [planner=cem]`
`python -m mbrl.train env=toy/point model=rssm algo=pets`          (plans from the current posterior)

Each env step, the planner (random / cem / icem / mppi, warm-started per env) optimises an action
sequence against `make_score_fn(model, state, particles)`, built from `imagine` with open-loop
actions: every candidate × particle goes through the model in one batched step per horizon step.
The state planned from is the posterior of the acting `Tracker` (for the ensemble: the observation).
The model is refit on the replay buffer (mbrl/algos/model_fit.py) after prefill, at every episode end
and every `fit_every` env steps. Rewards and terminations are learned by the model; nothing is
env-specific. An optional terminal value V(features) (`terminal_value=true`) is fitted by TD(λ) on the
real data's features after every model fit.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from mbrl.algos.base import Algorithm, LoopConfig
from mbrl.algos.common import build_model, loop_config, make_buffer, make_envs, to_dict
from mbrl.algos.dyna import feature_transitions
from mbrl.algos.model_fit import ModelFitter, fitter_from_config
from mbrl.algos.model_score import make_score_fn
from mbrl.errors import UserError
from mbrl.learners.value import TerminalValue
from mbrl.models.base import Tracker, WorldModel
from mbrl.planners import make_planner

# `algo.value_options` keys (mbrl.learners.value.TerminalValue arguments)
VALUE_KEYS = ("hidden", "layers", "lam", "lr", "updates", "batch_size", "refresh", "sequences", "length")


class PETS(Algorithm):
    name = "pets"

    def __init__(
        self,
        env,
        eval_env,
        buffer,
        model: WorldModel,
        fitter: ModelFitter,
        loop: LoopConfig,
        planner: Optional[dict] = None,
        horizon: int = 15,
        particles: int = 20,
        discount: float = 1.0,
        fit_on_episode_end: bool = True,
        fit_every: int = 1000,
        terminal_value: bool = False,
        value_options: Optional[dict] = None,
        run_dir=None,
    ):
        super().__init__(env, eval_env, buffer, loop, run_dir)
        if self.discrete:
            raise UserError(f"algo=pets needs continuous actions (a Box); this env has {self.action_space}. Valid for discrete actions: algo=dreamer")
        self.model = model.to(self.device)
        self.fitter = fitter
        self.action_dim = int(self.action_space.shape[0])
        opts = dict(planner or {"name": "icem"})
        self.planner_name = str(opts.pop("name", "icem"))
        self.planner_options = opts
        make_planner(self.planner_name, self.action_dim, **self.planner_options)  # validate options now
        self.horizon, self.particles, self.discount = int(horizon), int(particles), float(discount)
        if self.horizon < 1 or self.particles < 1:
            raise UserError(f"algo.horizon={horizon}, algo.particles={particles}; valid: both >= 1")
        self.fit_on_episode_end, self.fit_every = bool(fit_on_episode_end), int(fit_every)
        self.low = torch.as_tensor(self.action_space.low, dtype=torch.float32, device=self.device)
        self.high = torch.as_tensor(self.action_space.high, dtype=torch.float32, device=self.device)
        self.value: Optional[TerminalValue] = None
        if terminal_value:
            if not self.discount < 1.0:
                raise UserError(f"algo.terminal_value=true needs algo.discount < 1 (the value's γ); got discount={self.discount}. Valid: e.g. algo.discount=0.99")
            opts = dict(value_options or {})
            bad = sorted(set(opts) - set(VALUE_KEYS))
            if bad:
                raise UserError(f"unknown algo.value_options {bad}; valid: {', '.join(VALUE_KEYS)}")
            self.value_sequences, self.value_length = int(opts.pop("sequences", 64)), int(opts.pop("length", 32))
            self.value = TerminalValue(self.model.feat_dim, gamma=self.discount, seed=int(loop.seed), **opts).to(self.device)
        self.fitted = False
        self.fits = 0
        self._steps_since_fit = 0
        self._seed = int(loop.seed)

    # ------------------------------------------------------------------ model
    def value_data(self):
        """A latent model's real transitions in feature space, in stream order within each sampled
        sequence (the value's TD(λ) targets need it)."""
        with torch.no_grad():
            return feature_transitions(self.model, self.buffer.sample_sequences(self.value_sequences, self.value_length).to(self.device))

    def fit_model(self) -> dict[str, float]:
        # an observation-space model's real transitions are its features: gathered once for the fit and the value
        real = self.buffer.all_transitions() if self.model.markov_obs else None
        m = self.fitter.fit(self.buffer, transitions=real if self.model.train_on == "transitions" else None)
        if self.value is not None:
            m.update(self.value.fit(real if real is not None else self.value_data()))
        self.fitted = True
        self.fits += 1
        self._steps_since_fit = 0
        m["model/fits"] = float(self.fits)
        return m

    def can_train(self) -> bool:
        if self.model.train_on == "sequences":
            return len(self.buffer) >= self.num_envs * (self.fitter.seq_length + self.fitter.seq_batch)
        return len(self.buffer) > 0

    def pretrain(self) -> dict[str, float]:
        return self.fit_model()

    def train_step(self) -> dict[str, float]:
        self._steps_since_fit += 1
        if self.fit_every and self._steps_since_fit >= self.fit_every:
            return self.fit_model()
        return {}

    def end_of_episode(self, env_ids: np.ndarray) -> None:
        if self.fit_on_episode_end and self._pretrained and self.can_train() and self._steps_since_fit > 0:
            m = self.fit_model()
            if self.logger is not None:
                self.logger.accumulate(m)

    # ------------------------------------------------------------------ acting
    def new_planner(self, i: int):
        return make_planner(self.planner_name, self.action_dim, device=self.device, seed=self._seed * 1000 + i + 7919 * self.fits, **self.planner_options)

    def plan(self, start, planner) -> torch.Tensor:
        """The planned action sequence [H, A] from a state with batch size 1."""
        score = make_score_fn(self.model, start, self.particles, self.discount, terminal_value=self.value)
        return planner.plan(score, self.low, self.high, self.horizon)

    @torch.no_grad()
    def act(self, obs: Any, is_first: np.ndarray, state: Any, explore: bool):
        n = len(is_first)
        if not self.fitted:
            return np.stack([self.action_space.sample() for _ in range(n)]), state
        if state is None or len(state[1]) != n:
            state = (Tracker(self.model, n, self.device), [self.new_planner(i) for i in range(n)])
        tracker, planners = state
        post = tracker.observe(obs, is_first)
        out = torch.empty(n, self.action_dim, device=self.device)
        for i in range(n):  # one plan per env (each plan batches all candidates × particles)
            if is_first[i]:
                planners[i].reset()
            out[i] = self.plan(post[i : i + 1], planners[i])[0]
        tracker.acted(out)
        return out.cpu().numpy().astype(np.float32), state

    def modules(self) -> dict[str, Any]:
        mods = {"model": self.model, "model_fit": self.fitter, "pets": _Counters(self)}
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


def from_config(cfg: Any, run_dir: Optional[str] = None) -> PETS:
    env, eval_env = make_envs(cfg)
    if hasattr(env.single_action_space, "n"):
        raise UserError(f"algo=pets needs continuous actions (a Box); env {cfg.env} has {env.single_action_space}. Valid for discrete actions: algo=dreamer")
    a = to_dict(cfg.algo)
    model = build_model(cfg, env, "algo=pets")
    fitter = fitter_from_config(model, a.get("fit"), int(cfg.seed))
    keys = ("horizon", "particles", "discount", "fit_on_episode_end", "fit_every", "terminal_value", "value_options")
    kw = {k: a[k] for k in keys if k in a and a[k] is not None}
    buffer = make_buffer(env, cfg, a.get("buffer_size", 1_000_000))
    return PETS(env, eval_env, buffer, model, fitter, loop_config(cfg), planner=to_dict(cfg.get("planner")) or None, run_dir=run_dir, **kw)
