"""State value V(s) fitted on real transitions, for bootstrapping MPC at the planning horizon.

MPC on a short horizon only sees rewards within H steps; tasks whose failure is decided further
ahead (a cart drifting towards the end of its rail while the pole is still up) cannot be solved
by it. A learned terminal value added at the horizon — Σ_{t<H} γ^t r_t + γ^H V(s_H) — is the
remedy of POLO (Lowrey et al. 2019), LOOP (Sikchi et al. 2021) and TD-MPC (Hansen et al. 2022).

`TerminalValue.fit(data)` regresses V on TD(λ) returns of the data's own episodes: `data` is a
`Batch` of transitions in stream order (`ReplayBuffer.all_transitions()`); consecutive rows
continue an episode when the row is neither terminated nor truncated and the next row starts
where this one ended (`next_obs[k] == obs[k+1]`, not `is_first`). Targets are recomputed with the
current network every `refresh` updates. V evaluates the policy that collected the
data (the planner itself), as in LOOP. The net predicts V·(1-γ) (reward units).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

from mbrl.data.batch import Batch
from mbrl.models.nets import mlp
from mbrl.errors import UserError


def successor_mask(data: Batch) -> np.ndarray:
    """[N] bool: row k+1 continues the episode of row k (transitions in stream order)."""
    obs, nxt = data.obs.float(), data.next_obs.float()
    n = obs.shape[0]
    cont = np.zeros(n, dtype=bool)
    if n > 1:
        same = (nxt[:-1] == obs[1:]).reshape(n - 1, -1).all(-1).cpu().numpy()
        ended = data.terminated[:-1].bool().cpu().numpy()
        if getattr(data, "truncated", None) is not None:
            ended |= data.truncated[:-1].bool().cpu().numpy()
        if getattr(data, "is_first", None) is not None:
            same &= ~data.is_first[1:].bool().cpu().numpy()
        cont[:-1] = same & ~ended
    return cont


def lambda_targets(reward: np.ndarray, terminated: np.ndarray, succ: np.ndarray, next_value: np.ndarray,
                   gamma: float, lam: float) -> np.ndarray:
    """TD(λ) return per row: G_k = r_k + γ(1-d_k)[(1-λ) V(s'_k) + λ G_{k+1}] while row k+1 continues
    the episode, else r_k + γ(1-d_k) V(s'_k)."""
    r = reward.astype(np.float64)
    boot = gamma * (1.0 - terminated.astype(np.float64)) * next_value.astype(np.float64)
    g = np.empty_like(r)
    nxt = 0.0
    for k in range(len(r) - 1, -1, -1):  # ≤ buffer size iterations of float arithmetic
        if succ[k]:
            nxt = r[k] + (1.0 - lam) * boot[k] + gamma * lam * nxt
        else:
            nxt = r[k] + boot[k]
        g[k] = nxt
    return g


class TerminalValue(nn.Module):
    def __init__(self, obs_dim: int, hidden: int = 256, layers: int = 2, gamma: float = 0.99, lam: float = 0.95, lr: float = 1e-3,
                 updates: int = 1000, batch_size: int = 256, refresh: int = 100, seed: Optional[int] = None):
        super().__init__()
        if not 0.0 < gamma < 1.0:
            raise UserError(f"terminal value gamma={gamma} is invalid; expected 0 < gamma < 1")
        if not 0.0 <= lam <= 1.0:
            raise UserError(f"terminal value lam={lam} is invalid; expected 0 <= lam <= 1")
        self.gamma, self.lam = float(gamma), float(lam)
        self.updates, self.batch_size, self.refresh = int(updates), int(batch_size), max(1, int(refresh))
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self.net = mlp(obs_dim, 1, hidden, layers, act=nn.SiLU)
        self.register_buffer("mean", torch.zeros(obs_dim))
        self.register_buffer("std", torch.ones(obs_dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.generator = torch.Generator().manual_seed(0 if seed is None else seed)

    def _scaled(self, obs: torch.Tensor) -> torch.Tensor:
        """V(obs)·(1-γ): what the net predicts."""
        return self.net((obs.float() - self.mean) / self.std).squeeze(-1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """V(obs [..., D]) -> [...] in return units."""
        return self._scaled(obs) / (1.0 - self.gamma)

    def fit(self, data: Batch) -> dict[str, float]:
        """`updates` Adam steps on TD(λ) targets of `data` (transitions in stream order)."""
        obs, nxt = data.obs.float(), data.next_obs.float()
        n = obs.shape[0]
        if n == 0:
            return {}
        self.mean.copy_(obs.mean(0))
        self.std.copy_(obs.std(0, unbiased=False).clamp_min(1e-6) if n > 1 else torch.ones_like(self.mean))
        succ = successor_mask(data)
        reward = data.reward.float().reshape(n).cpu().numpy()
        term = data.terminated.float().reshape(n).cpu().numpy()
        scale = 1.0 - self.gamma
        losses = []
        for u in range(self.updates):
            if u % self.refresh == 0:
                with torch.no_grad():  # targets fixed for the next `refresh` updates
                    v_next = self._scaled(nxt).cpu().numpy() / scale
                target = torch.as_tensor(lambda_targets(reward, term, succ, v_next, self.gamma, self.lam) * scale, dtype=torch.float32)
            idx = torch.randint(n, (min(self.batch_size, n),), generator=self.generator)
            loss = torch.nn.functional.mse_loss(self._scaled(obs[idx]), target[idx])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(float(loss.detach()))
        self.fitted.fill_(True)
        with torch.no_grad():
            v = self(obs)
        return {"value/loss": float(np.mean(losses[-self.refresh:])), "value/mean": float(v.mean()), "value/min": float(v.min()),
                "value/max": float(v.max())}
