"""The WorldModel protocol. Every use of a world model talks only to this class.

Conventions
- A *state* is a dataclass of tensors (subclass `State`) with a leading batch dimension.
  `state[idx]`, `state.detach()`, `state.repeat(n)`, `state.reshape(...)`, `State.stack([...])` work
  on any of them (an RSSM's deter/stoch, an ensemble's observation and member, a transformer's cache).
- `reward(s)` / `cont(s)` describe the transition that ARRIVED at state `s` (as in the replay
  buffer's sequence layout): after `s1 = step(s0, a0)`, `reward(s1)` is the predicted r(s0, a0)
  and `cont(s1)` is 1 - P(terminated).
- Actions are float tensors: continuous actions in [-1, 1]; discrete actions one-hot.

What a backbone implements: `backbone_loss`, `observe`, `initial`, `step`, `reward`, `cont`,
`features` (and `decode` where it has a decoder, `native_uncertainty` where it has signals of its
own). Everything else — `loss`, `imagine`, `uncertainty`, the acting `Tracker`, the particle and
inference hooks, the fitting hooks, `from_config` — is written once here, with defaults that a
backbone overrides only where it has something better (the ensemble's TS∞ member blocks and folded
bf16 planning kernel, its per-member early stopping).
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Mapping, Optional, Union

import gymnasium as gym
import torch
from torch import nn

from mbrl.data.batch import Batch
from mbrl.errors import UserError

#: the uncertainty signals a backbone may provide (`WorldModel.uncertainty`)
SIGNALS = ("disagreement", "aleatoric", "members")


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

    def tile(self, n: int) -> "State":
        """n copies of the whole batch (copy-major: row j*B + b is copy j of row b)."""
        lead = len(self.batch_shape)
        return self._map(lambda t: t.repeat(n, *([1] * (t.dim() - 1))) if lead else t)

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
class Members:
    """The `members` signal: each of K members' prediction of the next step from (state, action).
    features [K, B, F] (what learners see), reward [K, B], cont [K, B] or None (then the model's own
    `cont` of the next state applies to every member). MOBILE's Bellman-target spread uses it."""

    features: torch.Tensor
    reward: torch.Tensor
    cont: Optional[torch.Tensor] = None


@dataclass
class Trajectory:
    """An imagined rollout of `horizon` steps from `B` start states.

    states:   State with leading [H+1, B] (index 0 = start); None when imagined with keep_states=False
    features: [H+1, B, F]
    actions:  [H+1, B, A]   actions[t] taken in states[t]; with a policy, the last one is its action at
              the final state (for bootstrapping Q-values; not applied); open-loop: zeros
    rewards:  [H, B]        reward(states[t+1])
    conts:    [H, B]        cont(states[t+1])
    signals:  {name: [H, B]} uncertainty(states[t], actions[t]) for the requested signal names
              (`members`: a Members whose fields have a leading [H] too)
    """

    states: Optional[State]
    features: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    conts: torch.Tensor
    signals: dict[str, Any] = dataclasses.field(default_factory=dict)


Policy = Callable[[torch.Tensor], torch.Tensor]  # features [B, F] -> action [B, A]


def space_dims(obs_space: Union[gym.Space, int], action_space: Union[gym.Space, int], who: str) -> tuple[int, int, bool]:
    """(flat vector obs size, action size, discrete) for backbones that model vector observations;
    ints are taken as sizes of a vector / continuous space."""
    from mbrl.models.parts import action_spec

    if isinstance(obs_space, int):
        obs_dim = obs_space
    elif isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1:
        obs_dim = int(obs_space.shape[0])
    else:
        raise UserError(f"model={who} needs vector observations (a 1-D Box); this env gives {obs_space}. Valid for pixels or dicts: a backbone with an encoder (e.g. model=rssm)")
    discrete, act_dim = action_spec(action_space, who)
    return obs_dim, act_dim, discrete


class WorldModel(nn.Module):
    """A learned environment model behind one small interface. See the module docstring."""

    #: registry name (set by `mbrl.models.register`)
    name: ClassVar[str] = ""
    #: True if the model has a decoder (decode() returns observations)
    has_decoder: ClassVar[bool] = False
    #: algorithm used when a user names only this model (`model=rssm` -> dreamer)
    default_algo: ClassVar[str] = ""
    #: uncertainty signals the backbone computes itself (any backbone gains `disagreement`,
    #: `aleatoric` and `members` from `model.heads=K`)
    native_signals: ClassVar[frozenset] = frozenset()
    #: True when a state is the observation itself (`features(observe(obs)) == obs`, no history):
    #: real data then needs no posterior pass (the ensemble); latent models infer states from sequences
    markov_obs: ClassVar[bool] = False
    #: whether gradients through `step` are useful (dynamics backprop); else actors use REINFORCE
    differentiable_step: ClassVar[bool] = True
    #: what a fit trains on: "transitions" (all data, epochs, hold-out early stopping) or "sequences"
    train_on: ClassVar[str] = "sequences"
    #: configuration overrides that make the model tiny (smoke runs, contract and matrix tests)
    tiny: ClassVar[dict] = {}

    #: size of `features(state)` (what actors, critics, values and planners see)
    feat_dim: int = 0
    #: action size (one-hot size for discrete actions) and whether actions are discrete
    action_dim: int = 0
    discrete: bool = False
    #: members for fitting (per-member bootstrap, early stopping, elites); 1 = the model as a whole
    num_members: int = 1
    #: the model's own seeded random stream (sampling noise, member assignment), if it keeps one; the
    #: fitter then draws its hold-out split and bootstraps from it too, so a seeded run is one stream
    generator: Optional[torch.Generator] = None

    def __init__(self) -> None:
        super().__init__()
        #: optional ensemble of heads over the features (`model.heads=K`), see ensemble_heads.py; an
        #: instance attribute (a class-level None would shadow the registered submodule)
        self.heads: Optional[nn.Module] = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg: Mapping, obs_space: gym.Space, action_space: gym.Space, seed: Optional[int] = None) -> "WorldModel":
        """The registry's one constructor: the backbone's keyword arguments from its config group
        (unknown keys fail with the valid ones), initial weights drawn from `seed` without touching
        the global RNG, and the shared heads when `heads` > 0."""
        from mbrl.models.ensemble_heads import HEAD_KEYS, FeatureHeads

        cfg = {k: v for k, v in dict(cfg).items() if k not in ("name", "default_algo")}
        head_kw = {k: cfg.pop(k) for k in HEAD_KEYS if k in cfg}
        params = inspect.signature(cls.__init__).parameters
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        valid = [p for p in params if p not in ("self", "obs_space", "action_space", "seed") and params[p].kind in kinds]
        unknown = sorted(set(cfg) - set(valid))
        if unknown:
            raise UserError(f"model={cls.name}: unknown keys {unknown}; valid: {', '.join(valid + list(HEAD_KEYS))}")
        kw = {k: v for k, v in cfg.items() if v is not None}
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            model = cls(obs_space, action_space, seed=seed, **kw)
            k = int(head_kw.get("heads") or 0)
            if k < 0:
                raise UserError(f"model.heads={k}; valid: 0 (none) or the number of heads (e.g. 5)")
            if k:
                model.heads = FeatureHeads(k, model.feat_dim, model.action_dim, hidden=int(head_kw.get("heads_hidden") or 256),
                                           layers=int(head_kw.get("heads_layers") or 2))
        return model

    # ------------------------------------------------------------------ training
    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float], State]:
        """The one way a model is trained: (loss, metrics, posterior states of the batch).
        Sequence batches [B, T] (buffer layout) or, for transition models, transition batches [N]
        (per-member [E, N] rows when fitted with a bootstrap). The posterior states are detached
        imagination starts (Dreamer) and are what the heads are trained on."""
        loss, metrics, post = self.backbone_loss(batch)
        if self.heads is not None:
            hl, hm = self.heads.loss_from(self, batch, post)
            loss = loss + hl
            metrics.update(hm)
        return loss, metrics, post.detach()

    def backbone_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float], State]:
        raise NotImplementedError

    def set_statistics(self, data: Batch) -> None:
        """Fitting hook: set normaliser statistics from the training transitions (default: none)."""

    def member_scores(self, batch: Batch) -> torch.Tensor:
        """Fitting hook: held-out score per member [num_members] (lower is better)."""
        with torch.no_grad():
            return self.loss(batch)[0].detach().float().reshape(1)

    def member_parameters(self) -> list[torch.Tensor]:
        """Fitting hook: tensors with a leading member dim, restored per member to its best (default:
        every parameter, as one member)."""
        return [p for p in self.parameters()] if self.num_members == 1 else []

    def select_elites(self, scores: torch.Tensor) -> None:
        """Fitting hook: keep the best members for prediction given held-out `scores` (default: none)."""

    # ------------------------------------------------------------------ the core (per backbone)
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

    # ------------------------------------------------------------------ uncertainty
    @property
    def signals(self) -> frozenset:
        """The uncertainty signals this model provides (its own, plus the heads')."""
        return self.native_signals | (frozenset(SIGNALS) if self.heads is not None else frozenset())

    def native_uncertainty(self, state: State, action: torch.Tensor, names: Iterable[str]) -> dict[str, Any]:
        return {}

    def uncertainty(self, state: State, action: torch.Tensor, names: Optional[Iterable[str]] = None) -> dict[str, Any]:
        """Named uncertainty signals of the step (state, action): `disagreement` [B] (epistemic: spread
        of the members' predicted next features), `aleatoric` [B] (largest predicted noise std),
        `members` (a Members: each member's next features, reward, cont). Native signals first; the
        heads fill in the rest."""
        names = list(self.signals if names is None else names)
        missing = [n for n in names if n not in self.signals]
        if missing:
            raise UserError(f"model={self.name} does not provide the uncertainty signal(s) {missing}; it provides: "
                            f"{', '.join(sorted(self.signals)) or 'none'} (model.heads=5 adds {', '.join(SIGNALS)})")
        out = self.native_uncertainty(state, action, [n for n in names if n in self.native_signals]) if self.native_signals else {}
        rest = [n for n in names if n not in out]
        if rest:
            out.update(self.heads.uncertainty(self.features(state), action, rest))
        return out

    # ------------------------------------------------------------------ hooks with defaults
    def repeat_particles(self, state: State, n: int) -> State:
        """`n` copies of a batch of states for particles / candidates, copy-major (row j*B + b is copy j
        of row b). The ensemble overrides it to lay out its TS∞ member blocks."""
        return state.tile(n)

    def inference(self) -> contextlib.AbstractContextManager:
        """A context for fast no-gradient rollouts (planning); the ensemble's folded bf16 kernel."""
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ written once
    def imagine(self, start: State, policy: Union[Policy, torch.Tensor], horizon: int, signals: Iterable[str] = (),
                keep_states: bool = True) -> Trajectory:
        """Roll a policy (features -> action) or an open-loop action tensor [B, H, A] through the model
        for `horizon` steps; `signals` are uncertainty names recorded at every step."""
        signals = list(signals)
        open_loop = torch.is_tensor(policy)
        if open_loop and (policy.dim() != 3 or policy.shape[1] < horizon):
            raise ValueError(f"imagine: open-loop actions must be [B, H>={horizon}, A]; got {tuple(policy.shape)}")
        states = [start] if keep_states else None
        feats = [self.features(start)]
        actions, rewards, conts = [], [], []
        sigs: dict[str, list] = {n: [] for n in signals}
        state = start
        for t in range(horizon):
            action = policy[:, t] if open_loop else policy(feats[-1])
            if signals:
                for k, v in self.uncertainty(state, action, signals).items():
                    sigs[k].append(v)
            state = self.step(state, action)
            actions.append(action)
            if keep_states:
                states.append(state)
            feats.append(self.features(state))
            rewards.append(self.reward(state))
            conts.append(self.cont(state))
        actions.append(torch.zeros_like(actions[-1]) if open_loop else policy(feats[-1]))
        stacked = {k: _stack_signal(v) for k, v in sigs.items()}
        return Trajectory(
            states=State.stack(states) if keep_states else None,
            features=torch.stack(feats),
            actions=torch.stack(actions),
            rewards=torch.stack(rewards),
            conts=torch.stack(conts),
            signals=stacked,
        )

    def action_input(self, action: Any) -> torch.Tensor:
        """Env actions (discrete indices or floats) as the model's float actions (one-hot for discrete)."""
        a = torch.as_tensor(action)
        if self.discrete and (not a.is_floating_point() or a.shape[-1:] != (self.action_dim,)):
            return nn.functional.one_hot(a.long().reshape(a.shape[: a.dim() - (1 if a.shape[-1:] == (1,) else 0)]), self.action_dim).float()
        return a.float()


def _stack_signal(vals: list) -> Any:
    """Stack one signal over imagination steps (a Members field by field)."""
    if isinstance(vals[0], Members):
        return Members(torch.stack([m.features for m in vals]), torch.stack([m.reward for m in vals]),
                       None if vals[0].cont is None else torch.stack([m.cont for m in vals]))
    return torch.stack(vals)


class Tracker:
    """The posterior of a batch of envs while acting, one step at a time: `observe(obs, is_first)`
    folds the newest observation into the state (resetting where `is_first`), `acted(action)` records
    the action taken in it. Dreamer, MPC (PlaNet-style: plan from the current posterior) and Dyna
    act through it."""

    def __init__(self, model: WorldModel, num_envs: int, device: torch.device | str = "cpu"):
        self.model, self.n, self.device = model, int(num_envs), torch.device(device)
        self.state: Optional[State] = None
        self.prev = torch.zeros(self.n, model.action_dim, device=self.device)

    def observe(self, obs: Any, is_first: Any) -> State:
        """The posterior state [n] after the observations `obs` (a batch of n, numpy or torch)."""
        from mbrl.data.batch import tree_map

        o = tree_map(lambda a: torch.as_tensor(a, device=self.device).unsqueeze(1), obs)
        first = torch.as_tensor(is_first, device=self.device).reshape(self.n, 1).bool()
        if self.state is None:
            first = torch.ones_like(first)
        dummy = torch.zeros(self.n, 1, self.model.action_dim, device=self.device)
        post = self.model.observe(o, dummy, first, state=self.state, prev_action=self.prev)
        self.state = post[:, 0]
        return self.state

    def acted(self, action: torch.Tensor) -> None:
        """Record the model-format actions [n, A] taken in the current state."""
        self.prev = action.detach().float().reshape(self.n, -1).to(self.device)
