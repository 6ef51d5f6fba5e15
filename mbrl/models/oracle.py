"""The true simulator behind the WorldModel protocol (`model=oracle`): the edge-of-reach check.

Sims et al. 2024 ("The Edge-of-Reach Problem in Offline Model-Based RL", sec. 4) replace the learned
model of MOPO-style methods by the true dynamics: the simulator's state is set from each dataset
(or imagined) observation, the action applied, and the real next observation, reward and termination
returned. Dynamics uncertainty is then zero everywhere, so an uncertainty-penalised method reduces to
SAC on truncated true rollouts, whose values bootstrap from edge-of-reach states and collapse, while
RAVL's value pessimism does not.

    python -m mbrl.train env=d4rl/hopper-medium-replay-v5 dataset_path=... model=oracle algo=mopo
    python -m mbrl.train env=d4rl/hopper-medium-replay-v5 dataset_path=... model=oracle algo=ravl

`model.env` names the simulator (`gym/Hopper-v5`, `toy/point`, ...); left null, the offline algos fill
in the dataset's evaluation env. Which observations define a state:
- MuJoCo envs (gymnasium's `MujocoEnv`): obs = [qpos without the x position, qvel] (the v5 defaults of
  Hopper, HalfCheetah, Walker2d; x is set to 0, the dynamics are translation invariant) or the full
  [qpos, qvel]. Hopper and Walker2d clip qvel to ±10 in their observations, so a state whose velocity
  was clipped is restored with the clipped value (rare in locomotion data).
- `toy/point`: obs = [x, y, goal_x, goal_y] is the whole state.
Signals: `aleatoric` and `disagreement` are 0, `members` are two identical copies of the true step
(their spread is 0), as a perfect model's would be. No parameters: nothing to fit (the offline algos
skip the fit for a model without trainable parameters). Rows are stepped one by one on the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from mbrl.data.batch import Batch
from mbrl.errors import UserError
from mbrl.models import register
from mbrl.models.base import Members, State, WorldModel, space_dims


@dataclass
class OracleState(State):
    """obs [B, D]; reward [B] and terminated [B] of the transition that arrived here."""

    obs: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor

    def event_dims_offset(self, name: str, value: torch.Tensor) -> int:
        return value.dim() - 1 if name == "obs" else value.dim()


class _Simulator:
    """Set a single env's state from an observation, step it, read the result."""

    def __init__(self, env_name: str, seed: int):
        import gymnasium as gym

        from mbrl import envs

        suite, task = envs.check(env_name)
        if suite == "gym":
            self.env = gym.make(task).unwrapped
            self.env.reset(seed=seed)
            if not hasattr(self.env, "set_state") or not hasattr(self.env, "model"):
                raise UserError(f"model=oracle: {env_name} is not a MuJoCo env whose state can be set; valid: gym MuJoCo envs (e.g. gym/Hopper-v5), toy/point")
            self.kind = "mujoco"
            self.nq, self.nv = int(self.env.model.nq), int(self.env.model.nv)
            space = self.env.action_space
            self.low, self.high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
        elif suite == "toy" and task == "point":
            from mbrl.envs.toy import PointEnv

            self.env = PointEnv()
            self.env.reset(seed=seed)
            self.kind = "point"
            self.low, self.high = -np.ones(2), np.ones(2)
        else:
            raise UserError(f"model=oracle: {env_name} has no state that can be set from an observation; valid: gym MuJoCo envs (e.g. gym/Hopper-v5), toy/point")
        self.obs_dim = int(np.prod(self.env.observation_space.shape))
        self.action_dim = int(np.prod(self.env.action_space.shape))
        self.name = env_name

    def set(self, obs: np.ndarray) -> None:
        if self.kind == "point":
            self.env.pos, self.env.goal, self.env._t = obs[:2].astype(np.float64), obs[2:].astype(np.float64), 0
            return
        n = self.nq + self.nv
        if obs.shape[0] == n - 1:  # x position excluded from the observation (the v5 default)
            obs = np.concatenate([[0.0], obs])
        self.env.set_state(obs[: self.nq].astype(np.float64), obs[self.nq:].astype(np.float64))

    def step(self, obs: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        self.set(obs)
        a = self.low + (np.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (self.high - self.low)
        nobs, r, term, _, _ = self.env.step(a)
        return np.asarray(nobs, np.float32).reshape(-1), float(r), bool(term)

    def reset_obs(self) -> np.ndarray:
        return np.asarray(self.env.reset()[0], np.float32).reshape(-1)


@register("oracle")
class OracleModel(WorldModel):
    default_algo = "mopo"
    native_signals = frozenset({"disagreement", "aleatoric", "members"})
    markov_obs = True
    differentiable_step = False
    train_on = "transitions"
    tiny = dict(env="toy/point")

    def __init__(self, obs_space, action_space, env: Optional[str] = None, seed: Optional[int] = None):
        super().__init__()
        if not env:
            raise UserError("model=oracle needs the env it simulates: model.env=<suite/task> (e.g. gym/Hopper-v5; the offline algos fill in the dataset's env)")
        obs_dim, action_dim, discrete = space_dims(obs_space, action_space, "oracle")
        if discrete:
            raise UserError("model=oracle supports continuous actions only (gym MuJoCo envs, toy/point)")
        self.sim = _Simulator(str(env), int(seed or 0))
        if (self.sim.obs_dim, self.sim.action_dim) != (obs_dim, action_dim):
            raise UserError(f"model=oracle: {env} has observations of size {self.sim.obs_dim} and actions of size {self.sim.action_dim}, "
                            f"but the data has {obs_dim} and {action_dim}; set model.env to the env the data comes from")
        self.env_name = str(env)
        self.obs_dim, self.action_dim, self.discrete = obs_dim, action_dim, False
        self.feat_dim = obs_dim
        self.register_buffer("_device_ref", torch.zeros(0))  # follows .to(device); no parameters
        self._cache: Optional[tuple] = None

    # ------------------------------------------------------------------ the true step
    def _state(self, obs: torch.Tensor) -> OracleState:
        lead = obs.shape[:-1]
        z = torch.zeros(lead, device=obs.device)
        return OracleState(obs=obs.float(), reward=z, terminated=z.clone())

    @torch.no_grad()
    def _simulate(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(next obs [N, D], reward [N], terminated [N]) of the true env, row by row (cached for the pair
        last asked, so `uncertainty` then `step` on the same (state, action) simulate once)."""
        c = self._cache
        if c is not None and c[0].shape == obs.shape and c[1].shape == action.shape and torch.equal(c[0], obs) and torch.equal(c[1], action):
            return c[2]
        o, a = obs.detach().cpu().double().numpy(), action.detach().cpu().double().numpy()
        nxt = np.empty((len(o), self.obs_dim), np.float32)
        rew, term = np.empty(len(o), np.float32), np.empty(len(o), np.float32)
        for i in range(len(o)):
            nxt[i], rew[i], term[i] = self.sim.step(o[i], a[i])
        dev = obs.device
        out = (torch.from_numpy(nxt).to(dev), torch.from_numpy(rew).to(dev), torch.from_numpy(term).to(dev))
        self._cache = (obs.detach().clone(), action.detach().clone(), out)
        return out

    def step(self, state: OracleState, action: torch.Tensor) -> OracleState:
        lead = state.obs.shape[:-1]
        nxt, r, te = self._simulate(state.obs.reshape(-1, self.obs_dim), action.reshape(-1, self.action_dim).float())
        return OracleState(obs=nxt.reshape(*lead, -1), reward=r.reshape(lead), terminated=te.reshape(lead))

    def observe(self, obs: Any, action: torch.Tensor, is_first: torch.Tensor, state: Optional[State] = None,
                prev_action: Optional[torch.Tensor] = None) -> OracleState:
        return self._state(torch.as_tensor(obs, device=self._device_ref.device))

    def initial(self, batch_size: int) -> OracleState:
        obs = torch.from_numpy(np.stack([self.sim.reset_obs() for _ in range(batch_size)])).to(self._device_ref.device)
        return self._state(obs)

    def reward(self, state: OracleState) -> torch.Tensor:
        return state.reward

    def cont(self, state: OracleState) -> torch.Tensor:
        return 1.0 - state.terminated

    def features(self, state: OracleState) -> torch.Tensor:
        return state.obs

    @torch.no_grad()
    def native_uncertainty(self, state: OracleState, action: torch.Tensor, names) -> dict[str, Any]:
        """A perfect model: zero spread and zero noise; `members` are two copies of the true step."""
        lead = state.obs.shape[:-1]
        out: dict[str, Any] = {}
        for name in names:
            if name in ("disagreement", "aleatoric"):
                out[name] = torch.zeros(lead, device=state.obs.device)
            elif name == "members":
                nxt = self.step(state, action)
                out[name] = Members(features=torch.stack([nxt.obs, nxt.obs]), reward=torch.stack([nxt.reward, nxt.reward]),
                                    cont=torch.stack([1.0 - nxt.terminated, 1.0 - nxt.terminated]))
        return out

    def backbone_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float], OracleState]:
        """Nothing to learn: the one-step error of the simulator on the batch (0 up to velocity clipping)."""
        post = self._state(batch.obs.float())
        if "next_obs" not in batch:
            return torch.zeros((), device=batch.obs.device), {}, post
        nxt, _, _ = self._simulate(batch.obs.reshape(-1, self.obs_dim).float(), batch.action.reshape(-1, self.action_dim).float())
        err = (nxt - batch.next_obs.reshape(-1, self.obs_dim).float()).pow(2).mean()
        return err.detach(), {"model/oracle_mse": float(err)}, post
