"""The WorldModel protocol. Every use of a world model talks only to this class.

Conventions
- A *state* is a dataclass of tensors (subclass `State`) with a leading batch dimension.
  `state[idx]`, `state.detach()`, `state.repeat(n)`, `State.stack([...])` work on any of them.
- `reward(s)` / `cont(s)` describe the transition that ARRIVED at state `s` (as in the replay
  buffer's sequence layout): after `s1 = step(s0, a0)`, `reward(s1)` is the predicted r(s0, a0)
  and `cont(s1)` is 1 - P(terminated).
- Actions are float tensors: continuous actions in [-1, 1]; discrete actions one-hot.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from mbrl.data.batch import Batch


@dataclass
class State:
    """Base class for backbone states: a dataclass whose fields are tensors (or None)."""

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "State":
        return dataclasses.replace(
            self, **{f.name: (fn(v) if torch.is_tensor(v) else v) for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}
        )

    def __getitem__(self, idx: Any) -> "State":
        return self._map(lambda t: t[idx])

    def detach(self) -> "State":
        return self._map(lambda t: t.detach())

    def to(self, device) -> "State":
        return self._map(lambda t: t.to(device))

    def repeat(self, n: int) -> "State":
        """Repeat each batch row n times (row-major: row i becomes rows i*n .. i*n+n-1)."""
        return self._map(lambda t: t.repeat_interleave(n, dim=0))

    def reshape(self, *shape: int) -> "State":
        """Reshape the leading batch dims (e.g. [B, T] -> [B*T] with reshape(-1))."""
        lead = self.batch_shape
        nlead = len(lead)
        return self._map(lambda t: t.reshape(*shape, *t.shape[nlead:]))

    @property
    def batch_shape(self) -> torch.Size:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if torch.is_tensor(v):
                return v.shape[: self.event_dims_offset(f.name, v)]
        raise ValueError("state has no tensors")

    def event_dims_offset(self, name: str, value: torch.Tensor) -> int:
        """Number of leading (batch) dims; default assumes fields are [*batch, feature]."""
        return value.dim() - 1

    @staticmethod
    def _combine(states: list["State"], fn: Callable[[list[torch.Tensor]], torch.Tensor]) -> "State":
        first = states[0]
        out = {}
        for f in dataclasses.fields(first):
            vals = [getattr(s, f.name) for s in states]
            out[f.name] = fn(vals) if torch.is_tensor(vals[0]) else vals[0]
        return dataclasses.replace(first, **out)

    @staticmethod
    def stack(states: list["State"], dim: int = 0) -> "State":
        return State._combine(states, lambda vals: torch.stack(vals, dim))

    @staticmethod
    def cat(states: list["State"], dim: int = 0) -> "State":
        return State._combine(states, lambda vals: torch.cat(vals, dim))


@dataclass
class Trajectory:
    """An imagined rollout of `horizon` steps from `B` start states.

    states:   State with leading [H+1, B] (index 0 = start)
    features: [H+1, B, F]
    actions:  [H+1, B, A]   actions[t] taken in states[t] (the last one is the policy's action at
              the final state, useful for bootstrapping Q-values; it is not applied)
    rewards:  [H, B]        reward(states[t+1])
    conts:    [H, B]        cont(states[t+1])
    uncertainty: [H, B] or None  uncertainty(states[t], actions[t]) when requested
    """

    states: State
    features: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    conts: torch.Tensor
    uncertainty: Optional[torch.Tensor] = None


Policy = Callable[[torch.Tensor], torch.Tensor]  # features [B, F] -> action [B, A]


class WorldModel(nn.Module):
    """A learned environment model behind one small interface."""

    #: True if the model has a decoder (decode() returns observations)
    has_decoder: bool = False
    #: algorithm used when a user names only this model (`model=rssm` -> dreamer)
    default_algo: str = ""
    #: size of `features(state)` (what actors, critics and planners see)
    feat_dim: int = 0
    #: optional: the detached posterior states of the last `loss()` batch [B, T], reused as
    #: imagination starts by actor-critic learners (None when the backbone does not keep them)
    last_states: Optional[State] = None

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss on a sequence batch [B, T] (buffer sequence layout); returns (loss, metrics)."""
        raise NotImplementedError

    def observe(self, obs: Any, action: torch.Tensor, is_first: torch.Tensor, state: Optional[State] = None,
                prev_action: Optional[torch.Tensor] = None) -> State:
        """Posterior states [B, T] over real data. `action[:, t]` is the action taken at obs[:, t]
        (buffer layout); the model uses action[:, t-1] to reach t. `state` continues a previous call
        and `prev_action` is the action taken in it (used for step 0; acting one step at a time)."""
        raise NotImplementedError

    def initial(self, batch_size: int) -> State:
        raise NotImplementedError

    def step(self, state: State, action: torch.Tensor) -> State:
        """One imagined step (prior / predicted next state)."""
        raise NotImplementedError

    def reward(self, state: State) -> torch.Tensor:
        raise NotImplementedError

    def cont(self, state: State) -> torch.Tensor:
        raise NotImplementedError

    def features(self, state: State) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, state: State) -> Any:
        return None

    def uncertainty(self, state: State, action: torch.Tensor) -> Optional[torch.Tensor]:
        """Epistemic signal for (state, action) of shape [B], or None if the backbone has none."""
        return None

    def imagine(self, start: State, policy: Policy, horizon: int, with_uncertainty: bool = False) -> Trajectory:
        """Roll `policy` through the model for `horizon` steps. Written once, on top of `step`."""
        states = [start]
        feats = [self.features(start)]
        actions, rewards, conts, uncs = [], [], [], []
        state = start
        for _ in range(horizon):
            action = policy(feats[-1])
            if with_uncertainty:
                u = self.uncertainty(state, action)
                if u is not None:
                    uncs.append(u)
            state = self.step(state, action)
            actions.append(action)
            states.append(state)
            feats.append(self.features(state))
            rewards.append(self.reward(state))
            conts.append(self.cont(state))
        actions.append(policy(feats[-1]))
        return Trajectory(
            states=State.stack(states),
            features=torch.stack(feats),
            actions=torch.stack(actions),
            rewards=torch.stack(rewards),
            conts=torch.stack(conts),
            uncertainty=torch.stack(uncs) if uncs else None,
        )
