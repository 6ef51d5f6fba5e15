"""Dyna: model rollouts into a second replay buffer, and the real/imagined mix a learner trains on.

One module for MBPO and the offline methods (MOPO, MOReL, MOBILE, RAVL), on any backbone:
1. start states from real data through `observe`: an observation-space model (`markov_obs`) starts
   from sampled real observations; a latent model from the posterior of sampled real sequences
   (`context` steps each), whose real transitions in feature space (f_t, a_t, r_t+1, f_t+1, d_t+1)
   also refill a real-features buffer at every rollout, so the learner sees real and imagined data in
   the same feature space;
2. `imagine(start, policy, k, signals)` — the policy acts on features; each step's reward may be
   replaced by a penalty over named uncertainty signals (`penalize(traj)`), and rows stop where the
   model predicts termination (1 - cont > `termination_threshold`) or the penalty halts them;
3. the surviving transitions go into the imagined buffer (`add_batch(contiguous=False)`), which keeps
   the last `retain` rollouts' worth of data;
4. `sample(batch_size)`: `real_ratio` of each batch from real data, the rest imagined; when the imagined
   buffer holds fewer transitions than its share, the real data makes up the difference.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Optional

import gymnasium as gym
import numpy as np
import torch

from mbrl.data import Batch, ReplayBuffer
from mbrl.errors import UserError
from mbrl.models.base import State, Trajectory, WorldModel

KEYS = ("obs", "action", "reward", "next_obs", "terminated")

#: a penalty: Trajectory (with the requested signals) -> (reward [k, n], halt [k, n] bool, metrics)
Penalty = Callable[[Trajectory], tuple[torch.Tensor, torch.Tensor, dict]]


def feature_transitions(model: WorldModel, seqs: Batch, post: Optional[State] = None) -> Batch:
    """Real transitions t -> t+1 of sequence batch `seqs` [B, T] in the model's feature space (rows in
    stream order within each sequence; t+1 not an episode start): obs = f_t, action = a_t (as stored),
    reward = r_t+1, next_obs = f_t+1, terminated = d_t+1. `post`: the posterior of `seqs` if known."""
    post = model.observe(seqs.obs, seqs.action, seqs.is_first) if post is None else post
    feat = model.features(post)
    valid = (~seqs.is_first[:, 1:].bool()).reshape(-1)
    f = feat.shape[-1]
    return Batch(obs=feat[:, :-1].reshape(-1, f)[valid], action=seqs.action[:, :-1].reshape(-1, *seqs.action.shape[2:])[valid],
                 reward=seqs.reward[:, 1:].reshape(-1)[valid].float(), next_obs=feat[:, 1:].reshape(-1, f)[valid],
                 terminated=seqs.terminated[:, 1:].reshape(-1)[valid].bool())


def act_on_features(model: WorldModel, learner: Any, obs: Any, is_first: np.ndarray, state: Any, explore: bool, device) -> tuple[np.ndarray, Any]:
    """A learner acting on the model's posterior features (`Tracker`); `state` is the tracker."""
    from mbrl.models.base import Tracker

    n = len(is_first)
    if state is None:
        state = Tracker(model, n, device)
    feats = model.features(state.observe(obs, is_first))
    action = learner.act(feats, explore=explore)
    state.acted(model.action_input(action))
    return action.cpu().numpy(), state


class Dyna:
    def __init__(self, model: WorldModel, real: ReplayBuffer, action_space: gym.Space, batch_size: int = 256,
                 real_ratio: float = 0.05, rollout_batch: int = 50_000, max_horizon: int = 1, retain: int = 5,
                 termination_threshold: float = 0.5, context: int = 16, signals: Iterable[str] = (),
                 penalize: Optional[Penalty] = None, seed: int = 0, device: torch.device | str = "cpu"):
        if not 0.0 <= real_ratio <= 1.0:
            raise UserError(f"algo.real_ratio={real_ratio}; valid: 0 <= real_ratio <= 1")
        if int(rollout_batch) < 1 or int(max_horizon) < 1 or int(retain) < 1:
            raise UserError(f"algo.rollout_batch={rollout_batch}, rollout horizon {max_horizon}, model_retain={retain}; valid: each >= 1")
        self.model, self.real, self.device = model, real, torch.device(device)
        self.batch_size, self.real_ratio = int(batch_size), float(real_ratio)
        self.rollout_batch, self.retain = int(rollout_batch), int(retain)
        self.termination_threshold, self.context = float(termination_threshold), int(context)
        self.signals, self.penalize = tuple(signals), penalize
        feat_space = gym.spaces.Box(-np.inf, np.inf, (int(model.feat_dim),), np.float32)
        cap = 2 * self.rollout_batch * int(max_horizon) * self.retain + 16  # contiguous=False: two entries per transition
        self.imagined = ReplayBuffer(cap, feat_space, action_space, num_envs=1, seed=seed + 1, device=self.device)
        # a latent model's real transitions, in feature space, refreshed with every rollout
        self.real_features = None if model.markov_obs else ReplayBuffer(2 * self.rollout_batch + 16, feat_space, action_space, num_envs=1,
                                                                        seed=seed + 2, device=self.device)

    # ------------------------------------------------------------------ real data through observe
    @torch.no_grad()
    def start(self, n: int) -> tuple[State, torch.Tensor]:
        """`n` posterior states of real data and the real actions taken in them."""
        model = self.model
        if model.markov_obs:
            n = min(n, len(self.real))
            b = self.real.sample(n)
            obs = b.obs.float().to(self.device).unsqueeze(1)
            act = model.action_input(b.action.to(self.device))
            first = torch.ones(n, 1, dtype=torch.bool, device=self.device)
            return model.observe(obs, act.unsqueeze(1), first)[:, 0], act
        L = max(2, self.context)
        seqs = self.real.sample_sequences(max(1, min(math.ceil(n / L), self.real.num_chunks(L))), L).to(self.device)
        post = model.observe(seqs.obs, seqs.action, seqs.is_first)
        act = model.action_input(seqs.action)
        tr = feature_transitions(model, seqs, post)
        if tr.reward.shape[0]:
            self.real_features.add_batch(tr.obs.float().cpu().numpy(), tr.action.cpu().numpy(), tr.reward.cpu().numpy(), tr.next_obs.float().cpu().numpy(),
                                         tr.terminated.cpu().numpy(), np.zeros(tr.reward.shape[0], bool), contiguous=False)
        return post.reshape(-1)[:n], act.reshape(-1, act.shape[-1])[:n]

    # ------------------------------------------------------------------ rollouts
    @torch.no_grad()
    def rollout(self, policy: Callable[[torch.Tensor], torch.Tensor], horizon: int) -> dict[str, float]:
        """`rollout_batch` starts, `horizon` imagined steps under `policy`; survivors into the buffer."""
        start, _ = self.start(self.rollout_batch)
        traj = self.model.imagine(start, policy, int(horizon), signals=self.signals, keep_states=False)
        reward = traj.rewards.float()
        halt = torch.zeros_like(reward, dtype=torch.bool)
        metrics: dict[str, float] = {}
        if self.penalize is not None:
            reward, halt, metrics = self.penalize(traj)
        term = ((1.0 - traj.conts.float()) > self.termination_threshold) | halt  # [k, n]
        ended = torch.cumsum(term.int(), 0) - term.int()  # terminations strictly before step t
        alive = ended == 0
        k, n = reward.shape
        idx = alive.reshape(-1).nonzero().squeeze(-1)
        f = traj.features.float()
        obs = f[:-1].reshape(k * n, -1)[idx]
        nxt = f[1:].reshape(k * n, -1)[idx]
        act = traj.actions[:-1].reshape(k * n, -1)[idx].float()
        if self.model.discrete:
            act = act.argmax(-1)
        r = reward.reshape(-1)[idx]
        te = term.reshape(-1)[idx]
        self.imagined.add_batch(obs.cpu().numpy(), act.cpu().numpy(), r.cpu().numpy(), nxt.cpu().numpy(), te.cpu().numpy(),
                                np.zeros(idx.numel(), bool), contiguous=False)
        raw = traj.rewards.float().reshape(-1)[idx]
        m = max(idx.numel(), 1)
        metrics.update({"dyna/rollout_length": float(horizon), "dyna/imagined": float(idx.numel()), "dyna/imagined_buffer": float(len(self.imagined)),
                        "dyna/imagined_term": float(te.float().mean()) if idx.numel() else 0.0, "dyna/model_reward": float(raw.sum()) / m,
                        "dyna/penalty": float((raw - r).sum()) / m, "dyna/halted": float(halt.reshape(-1)[idx].float().sum()) / m})
        return metrics

    # ------------------------------------------------------------------ the mix
    def real_source(self) -> ReplayBuffer:
        return self.real if self.real_features is None else self.real_features

    def sample(self, batch_size: Optional[int] = None) -> Batch:
        """A learner batch: `real_ratio` real, the rest imagined (as much as the imagined buffer holds)."""
        bs = int(batch_size or self.batch_size)
        n_model = min(bs - int(round(bs * self.real_ratio)), len(self.imagined))
        real = self.real_source()
        n_real = min(bs - n_model, len(real))
        parts = []
        if n_real:
            b = real.sample(n_real)
            parts.append(b)
        if n_model:
            parts.append(self.imagined.sample(n_model))
        if not parts:
            raise RuntimeError("dyna: no real or imagined transitions to sample yet")
        out = {}
        for k in KEYS:
            vals = [p[k].to(self.device) for p in parts]
            out[k] = torch.cat([v.float() for v in vals]) if k != "action" or not self.model.discrete else torch.cat(vals)
        return Batch(out)
