"""TD-MPC2 (Hansen, Su, Wang, ICLR 2024; reference github.com/nicklashansen/tdmpc2, `tdmpc2/tdmpc2.py`,
`trainer/online_trainer.py`): MPPI in the latent space of the world model, guided by its policy prior.

`python -m mbrl.train env=dmc/cartpole-swingup model=tdmpc`         (algo=tdmpc2 is implied)
`python -m mbrl.train env=gym/Pendulum-v1 algo=tdmpc2 model.size=1`

The loop (reference OnlineTrainer): `prefill` random seed steps, then at the end of prefill `pretrain_updates`
updates on the seed data (the reference: as many as seed steps), then one update per env step
(`train_ratio: 1`) on a [batch_size=256, horizon+1] sequence batch, and planning at every step:
- the model is any registered backbone with a policy prior and Q-heads (`policy_prior`, `pi_action`,
  `value`, `param_groups`: model=tdmpc); the algorithm never imports it;
- planning: the planner (default planner=mppi_tdmpc2) scores `num_samples` open-loop sequences of
  `horizon` steps by imagined discounted reward + γ^H · cont · Q(z_H, π(z_H)) (algos/model_score.py, one
  batched imagine per iteration); `policy_samples` (24) of them are proposals, rollouts of the policy
  prior from the current latent; warm start from the shifted previous mean; while exploring, the first
  action gets + std · N(0, 1) noise (reference `_plan`);
- optimisers (reference TDMPC2.__init__): Adam lr 3e-4 over the model with the encoder at lr x 0.3
  (`enc_lr_scale`), the policy prior with its own Adam (eps 1e-5), both clipped to a gradient norm of 20
  (`grad_clip_norm`); the model's one `loss` holds both objectives (their gradients touch disjoint
  parameters) and moves the target Q-heads by Polyak averaging;
- discount from the episode length (reference `_get_discount`: (L/5 - 1) / (L/5) clipped to
  [0.95, 0.995]), L measured over the prefill episodes, unless `algo.discount` or `model.discount` is set.
Discrete actions get a one-line UserError (the policy prior is a tanh-Gaussian).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from mbrl.algos.base import Algorithm, LoopConfig
from mbrl.algos.common import build_model, loop_config, make_buffer, make_envs, to_dict
from mbrl.algos.model_score import make_score_fn
from mbrl.errors import UserError
from mbrl.models.base import Tracker, WorldModel
from mbrl.planners import make_planner


def episode_discount(length: float, denom: float = 5.0, low: float = 0.95, high: float = 0.995) -> float:
    """Reference TDMPC2._get_discount: (L/denom - 1) / (L/denom), clipped to [low, high]
    (`discount_denom: 5, discount_min: 0.95, discount_max: 0.995`)."""
    frac = float(length) / denom
    return min(max((frac - 1) / frac, low), high) if frac > 0 else low


class TDMPC2(Algorithm):
    name = "tdmpc2"

    def __init__(self, env, eval_env, buffer, model: WorldModel, loop: LoopConfig, planner: Optional[dict] = None, horizon: int = 3,
                 policy_samples: int = 24, batch_size: int = 256, lr: float = 3e-4, enc_lr_scale: float = 0.3, grad_clip: float = 20.0,
                 discount: Optional[float] = None, pretrain_updates: Optional[int] = None, mpc: bool = True, run_dir=None):
        super().__init__(env, eval_env, buffer, loop, run_dir)
        if self.discrete:
            raise UserError(f"algo=tdmpc2 needs continuous actions (a Box); this env has {self.action_space}. Valid for discrete actions: algo=dreamer")
        if not getattr(model, "policy_prior", False):
            raise UserError(f"algo=tdmpc2 plans with a policy prior and Q-heads, which model={model.name} does not have; valid: model=tdmpc")
        self.model = model.to(self.device)
        self.action_dim = int(self.action_space.shape[0])
        opts = dict(planner or {"name": "mppi"})
        self.planner_name = str(opts.pop("name", "mppi"))
        self.planner_options = opts
        self.population = int(opts.get("population", 512))
        self.horizon, self.policy_samples, self.batch_size = int(horizon), int(policy_samples), int(batch_size)
        if self.horizon < 1 or self.batch_size < 1 or not 0 <= self.policy_samples < self.population:
            raise UserError(f"algo.horizon={horizon}, algo.batch_size={batch_size}, algo.policy_samples={policy_samples}; valid: horizon >= 1, "
                            f"batch_size >= 1, 0 <= policy_samples < planner.population ({self.population})")
        make_planner(self.planner_name, self.action_dim, **self.planner_options)  # validate options now
        self.mpc = bool(mpc)
        groups = model.param_groups()
        self.optim = torch.optim.Adam([{"params": groups["encoder"], "lr": lr * enc_lr_scale}, {"params": groups["rest"]}], lr=lr)
        self.pi_optim = torch.optim.Adam(groups["pi"], lr=lr, eps=1e-5)
        self.model_params, self.pi_params = groups["encoder"] + groups["rest"], groups["pi"]
        self.grad_clip = float(grad_clip)
        self.fixed_discount = discount if discount is not None else model.discount
        if self.fixed_discount is not None:
            model.discount = float(self.fixed_discount)
        self.pretrain_updates = pretrain_updates
        if not (np.allclose(self.action_space.low, -1.0) and np.allclose(self.action_space.high, 1.0)):
            raise UserError(f"algo=tdmpc2 needs actions in [-1, 1] (its policy prior is tanh-squashed); got {self.action_space}. Valid: an env from envs.make (it rescales actions)")
        self.low = -torch.ones(self.action_dim, device=self.device)
        self.high = torch.ones(self.action_dim, device=self.device)
        self._seed = int(loop.seed)
        self._noise = torch.Generator(device=self.device).manual_seed(self._seed + 17)
        self.planning_time = 0.0
        self.update_time = 0.0

    # ------------------------------------------------------------------ training
    def can_train(self) -> bool:
        return len(self.buffer) >= self.num_envs * (self.horizon + 1 + self.batch_size)

    def update(self, batch) -> dict[str, float]:
        """One TD-MPC2 update: model (consistency, reward, termination, value) and policy prior."""
        self.model.train()
        loss, metrics, _ = self.model.loss(batch)
        self.optim.zero_grad(set_to_none=True)
        self.pi_optim.zero_grad(set_to_none=True)
        loss.backward()
        metrics["wm/grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model_params, self.grad_clip))
        metrics["pi/grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.pi_params, self.grad_clip))
        self.optim.step()
        self.pi_optim.step()
        self.model.eval()
        return metrics

    def train_step(self) -> dict[str, float]:
        import time

        t = time.perf_counter()
        m = self.update(self.buffer.sample_sequences(self.batch_size, self.horizon + 1).to(self.device))
        self.update_time += time.perf_counter() - t
        return m

    def pretrain(self) -> dict[str, float]:
        if self.fixed_discount is None:  # episode length over the prefill episodes (fixed-length tasks: exact)
            length = self.env_steps / self.num_envs / max(self.episodes / self.num_envs, 1) if self.episodes else 1000.0
            self.model.discount = episode_discount(length)
        n = self.loop.prefill if self.pretrain_updates is None else int(self.pretrain_updates)
        m: dict[str, float] = {}
        for _ in range(max(n, 0)):
            m = self.train_step()
        m["tdmpc2/discount"] = float(self.model.discount)
        return m

    # ------------------------------------------------------------------ acting
    def new_planner(self, i: int):
        return make_planner(self.planner_name, self.action_dim, device=self.device, seed=self._seed * 1000 + i, **self.planner_options)

    def proposals(self, start) -> Optional[torch.Tensor]:
        """`policy_samples` rollouts of the policy prior from `start` (batch 1): [P, H, A]."""
        if self.policy_samples == 0:
            return None
        traj = self.model.imagine(self.model.repeat_particles(start, self.policy_samples), self.model.pi_action, self.horizon, keep_states=False)
        return traj.actions[: self.horizon].transpose(0, 1)

    def plan(self, start, planner, explore: bool) -> torch.Tensor:
        """The first action of the planned sequence from a state of batch size 1."""
        score = make_score_fn(self.model, start, 1, float(self.model.discount or 0.99), terminal_value=self.model.value)
        seq = planner.plan(score, self.low, self.high, self.horizon, proposals=self.proposals(start))
        a = seq[0]
        std = getattr(planner, "last_std", None)
        if explore and std is not None:
            a = a + std * torch.randn(a.shape, generator=self._noise, device=a.device)
        return torch.maximum(torch.minimum(a, self.high), self.low)

    @torch.no_grad()
    def act(self, obs: Any, is_first: np.ndarray, state: Any, explore: bool):
        import time

        n = len(is_first)
        if state is None or len(state[1]) != n:
            state = (Tracker(self.model, n, self.device), [self.new_planner(i) for i in range(n)])
        tracker, planners = state
        t = time.perf_counter()
        self.model.eval()
        post = tracker.observe(obs, is_first)
        if self.mpc:
            out = torch.empty(n, self.action_dim, device=self.device)
            for i in range(n):  # one plan per env (each plan scores all its samples in one batch per iteration)
                if is_first[i]:
                    planners[i].reset()
                out[i] = self.plan(post[i : i + 1], planners[i], explore)
        else:  # the policy prior alone (reference `mpc: false`)
            out = self.model.pi(self.model.features(post), explore=explore)[0]
        tracker.acted(out)
        self.planning_time += time.perf_counter() - t
        return out.cpu().numpy().astype(np.float32), state

    def modules(self) -> dict[str, Any]:
        return {"model": self.model, "optim": self.optim, "pi_optim": self.pi_optim}


def from_config(cfg: Any, run_dir: Optional[str] = None) -> TDMPC2:
    env, eval_env = make_envs(cfg)
    if hasattr(env.single_action_space, "n"):
        raise UserError(f"algo=tdmpc2 needs continuous actions (a Box); env {cfg.env} has {env.single_action_space}. Valid for discrete actions: algo=dreamer")
    a = to_dict(cfg.algo)
    model = build_model(cfg, env, "algo=tdmpc2")
    keys = ("horizon", "policy_samples", "batch_size", "lr", "enc_lr_scale", "grad_clip", "discount", "pretrain_updates", "mpc")
    kw = {k: a[k] for k in keys if k in a and a[k] is not None}
    buffer = make_buffer(env, cfg, a.get("buffer_size", 1_000_000))
    return TDMPC2(env, eval_env, buffer, model, loop_config(cfg), planner=to_dict(cfg.get("planner")) or None, run_dir=run_dir, **kw)
