"""ReplayBuffer: one ring stream per env, entries in DreamerV3's stream layout.

Storage
-------
Each env owns a ring of ``capacity // num_envs`` *entries*. An entry is one observation plus

- ``action``     the action taken at this observation (``has_action`` says whether it is known yet),
- ``reward``, ``terminated``, ``truncated``  of the transition that ARRIVED at this observation
  (0 / False on ``is_first`` entries),
- ``is_first``   first observation of an episode, ``is_last`` last one.

`add` writes one entry per env per step (the ``next_obs``), plus one ``is_first`` entry (the ``obs``)
when an episode starts, so no observation is stored twice. A stream's newest entry mid-episode has no
action yet; it is completed by the next `add`.

Validity
--------
- A transition starts at entry ``t`` when its action is known (``has_action``; never true on
  ``is_last``), and ``t+1`` is then always present (it is written in the same call, and the ring
  overwrites oldest first). `sample` draws uniformly (or recency-weighted) over these.
- A sequence chunk is ``length`` consecutive entries of one stream, all written, not crossing the write
  head. The newest entry of a stream whose episode is still running (no action yet) is NEVER part of a
  chunk, so in every chunk ``action[:, t]`` is the real action unless ``is_last[:, t]`` (then zeros).
  Chunks may span episode boundaries (``is_first`` marks them) and the ring's wrap-around.

Cuts: when `add` gets ``reset[i]`` (or `add_batch` a first transition that does not continue the
stream) while the stream's newest entry is mid-episode, that entry is marked ``is_last`` and
``truncated`` so that no sample bridges the cut. Disconnected transitions inside `add_batch` (e.g.
imagined one-step data) end with ``is_last=True`` and keep their given ``terminated`` / ``truncated``.
"""
from __future__ import annotations

import io
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mbrl.data.batch import Batch
from mbrl.errors import UserError

_PARALLEL_MIN_BYTES = 1 << 20  # gathers smaller than this stay on the calling thread




def _space_spec(space: Any, what: str) -> tuple[tuple[int, ...], np.dtype]:
    shape, dtype = getattr(space, "shape", None), getattr(space, "dtype", None)
    if shape is None or dtype is None:
        raise UserError(f"{what} space {space!r} is not supported; valid: Box, Discrete, MultiDiscrete, MultiBinary (or a Dict of them for observations)")
    return tuple(int(s) for s in shape), np.dtype(dtype)


def _is_dict_space(space: Any) -> bool:
    from gymnasium import spaces

    return isinstance(space, spaces.Dict)


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


class ReplayBuffer:
    """Ring replay buffer of transitions and sequences; see the module docstring for the layout.

    Args:
        capacity: total entries (observations) over all envs; each env gets ``capacity // num_envs``.
        obs_space: gymnasium space of ONE env's observation (Box, Discrete, ... or Dict of them).
        action_space: gymnasium space of one env's action (Box float32, Discrete -> int64 indices).
        num_envs: number of parallel env streams (leading dim of `add`).
        seed: seed of the sampling RNG (saved with the buffer).
        device: device of the sampled tensors (CUDA: gathered into pinned memory, copied async).
        recency: 0 = uniform sampling; r > 0 samples the age fraction ``a = u ** (1 + r)`` (u uniform),
            i.e. density ∝ a^(1/(1+r) - 1): newer data more likely, the more so the larger r.
        gather_threads: threads that copy a large sampled field (pixels, >= 1 MiB per batch) in parallel
            parts; 1 = on the calling thread. Use it where cores are free (sampling is memory-bound).
        dfs_tau: 0 = `sample_sequences` draws chunk starts uniformly; tau > 0 = Drama's dynamic
            frequency-based sampling (Wang et al. 2025, `replay_buffer.py` of realwenlongwang/drama): each
            entry counts how often a sampled chunk started there, and starts are drawn without replacement
            with P(start) ∝ exp(-count / tau), so data the world model has trained on less (new data above
            all) is favoured while the model is still inaccurate. A rewritten entry's count restarts at 0.
            Costs one pass over the counts of all chunk starts per batch.
    """

    def __init__(self, capacity: int, obs_space: Any, action_space: Any, num_envs: int = 1, seed: int = 0,
                 device: str | torch.device = "cpu", recency: float = 0.0, gather_threads: int = 1, dfs_tau: float = 0.0):
        num_envs, capacity = int(num_envs), int(capacity)
        if num_envs < 1:
            raise UserError(f"num_envs={num_envs} is invalid; expected an integer >= 1")
        if capacity // num_envs < 2:
            raise UserError(f"capacity={capacity} gives {capacity // num_envs} entries per env stream for num_envs={num_envs}; expected capacity >= 2 * num_envs")
        if recency < 0:
            raise UserError(f"recency={recency} is invalid; expected a float >= 0 (0 = uniform)")
        self.capacity, self.num_envs, self.seed = capacity, num_envs, int(seed)
        self.stream_capacity = capacity // num_envs
        self.obs_space, self.action_space = obs_space, action_space
        self.device = torch.device(device)
        self.recency = float(recency)
        if not dfs_tau >= 0:
            raise UserError(f"dfs_tau={dfs_tau} is invalid; expected a float >= 0 (0 = uniform chunk starts, e.g. 10 = Drama's)")
        self.dfs_tau = float(dfs_tau)
        if int(gather_threads) < 1:
            raise UserError(f"gather_threads={gather_threads} is invalid; expected an integer >= 1")
        self.gather_threads = int(gather_threads)
        self._pool: ThreadPoolExecutor | None = None
        self._pin = self.device.type == "cuda" and torch.cuda.is_available()
        self._dict_obs = _is_dict_space(obs_space)
        if self._dict_obs:
            self._obs_specs = {k: _space_spec(s, f"observation[{k!r}]") for k, s in obs_space.spaces.items()}
        else:
            self._obs_specs = {None: _space_spec(obs_space, "observation")}
        self._act_shape, self._act_dtype = _space_spec(action_space, "action")
        self._discrete = self._act_shape == () and np.issubdtype(self._act_dtype, np.integer)
        if np.issubdtype(self._act_dtype, np.integer):
            self._act_dtype = np.dtype(np.int64)
        self.rng = np.random.default_rng(self.seed)
        n, c = num_envs, self.stream_capacity
        self._obs = {k: np.zeros((n, c, *shape), dtype=dt) for k, (shape, dt) in self._obs_specs.items()}
        self._action = np.zeros((n, c, *self._act_shape), dtype=self._act_dtype)
        self._reward = np.zeros((n, c), dtype=np.float32)
        self._terminated = np.zeros((n, c), dtype=bool)
        self._truncated = np.zeros((n, c), dtype=bool)
        self._is_first = np.zeros((n, c), dtype=bool)
        self._is_last = np.zeros((n, c), dtype=bool)
        self._has_action = np.zeros((n, c), dtype=bool)
        self._pos = np.zeros(n, dtype=np.int64)     # next write index per stream
        self._count = np.zeros(n, dtype=np.int64)   # stored entries per stream (<= stream_capacity)
        self._n_valid = 0                           # sampleable transitions (entries with has_action)
        # dfs_tau > 0: how often a sampled sequence chunk started at each entry
        self._sampled = np.zeros((n, c), dtype=np.int64) if self.dfs_tau > 0 else None

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def for_env(cls, vector_env: Any, capacity: int, **kw: Any) -> "ReplayBuffer":
        """Buffer shaped for a gymnasium VectorEnv (its single spaces and num_envs)."""
        return cls(capacity, vector_env.single_observation_space, vector_env.single_action_space,
                   num_envs=getattr(vector_env, "num_envs", 1), **kw)

    def __len__(self) -> int:
        return int(self._n_valid)

    @property
    def num_entries(self) -> int:
        """Stored entries (observations) over all streams."""
        return int(self._count.sum())

    def __repr__(self) -> str:
        return (f"ReplayBuffer(capacity={self.capacity}, num_envs={self.num_envs}, transitions={len(self)}, "
                f"entries={self.num_entries}, device={self.device})")

    # ------------------------------------------------------------------ input checks
    def _check_array(self, name: str, x: Any, shape: tuple[int, ...], dtype: np.dtype, kind: str = "same_kind") -> np.ndarray:
        if torch.is_tensor(x):
            x = x.detach().cpu().numpy()
        a = np.asarray(x)
        if a.shape != shape:
            raise UserError(f"{name} has shape {a.shape}; expected {shape}")
        if kind == "flag":
            if not (a.dtype == bool or np.issubdtype(a.dtype, np.number)):
                raise UserError(f"{name} has dtype {a.dtype}; expected bool (or 0/1 numbers)")
            return a.astype(bool, copy=False) if a.dtype == bool else a != 0
        if kind == "number":
            if not (a.dtype == bool or np.issubdtype(a.dtype, np.number)):
                raise UserError(f"{name} has dtype {a.dtype}; expected a real number type (cast to {dtype})")
            return a.astype(dtype, copy=False)
        if not np.can_cast(a.dtype, dtype, casting=kind):
            raise UserError(f"{name} has dtype {a.dtype}; expected {dtype} (or a type that casts to it without changing kind)")
        return a.astype(dtype, copy=False)

    def _check_obs(self, name: str, x: Any, lead: tuple[int, ...]) -> dict:
        if self._dict_obs:
            if not isinstance(x, dict) or set(x) != set(self._obs_specs):
                got = sorted(x) if isinstance(x, dict) else type(x).__name__
                raise UserError(f"{name} is {got}; expected a dict with keys {sorted(self._obs_specs)}")
            return {k: self._check_array(f"{name}[{k!r}]", x[k], lead + shape, dt) for k, (shape, dt) in self._obs_specs.items()}
        if isinstance(x, dict):
            raise UserError(f"{name} is a dict; expected an array of shape {lead + self._obs_specs[None][0]}")
        shape, dt = self._obs_specs[None]
        return {None: self._check_array(name, x, lead + shape, dt)}

    def _check_action(self, x: Any, lead: tuple[int, ...]) -> np.ndarray:
        kind = "same_kind"
        if self._discrete:
            if torch.is_tensor(x):
                x = x.detach().cpu().numpy()
            a = np.asarray(x)
            if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
                raise UserError(f"action has dtype {a.dtype}; expected integer indices (Discrete action space) of shape {lead}")
        return self._check_array("action", x, lead + self._act_shape, self._act_dtype, kind)

    def _check_step(self, obs, action, reward, next_obs, terminated, truncated, lead):
        obs = self._check_obs("obs", obs, lead)
        next_obs = self._check_obs("next_obs", next_obs, lead)
        action = self._check_action(action, lead)
        reward = self._check_array("reward", reward, lead, np.dtype(np.float32), kind="number")
        terminated = self._check_array("terminated", terminated, lead, np.dtype(bool), kind="flag")
        truncated = self._check_array("truncated", truncated, lead, np.dtype(bool), kind="flag")
        return obs, action, reward, next_obs, terminated, truncated

    # ------------------------------------------------------------------ writing
    def _put(self, n: np.ndarray, t: np.ndarray, obs: dict, action: np.ndarray | None, has_action: np.ndarray,
             reward: np.ndarray | float, terminated, truncated, is_first: bool, is_last) -> None:
        """Write entries at (stream n, index t); positions must be unique within one call."""
        if len(t) == 0:
            return
        self._n_valid -= int(self._has_action[n, t].sum())
        for k, v in obs.items():
            self._obs[k][n, t] = v
        if action is None:
            self._action[n, t] = 0
        else:
            self._action[n, t] = action
        self._has_action[n, t] = has_action
        self._reward[n, t] = reward
        self._terminated[n, t] = terminated
        self._truncated[n, t] = truncated
        self._is_first[n, t] = is_first
        self._is_last[n, t] = is_last
        if self._sampled is not None:
            self._sampled[n, t] = 0
        self._n_valid += int(np.count_nonzero(has_action))

    def _advance(self, n: np.ndarray, written: np.ndarray) -> None:
        c = self.stream_capacity
        self._pos[n] = (self._pos[n] + written) % c
        self._count[n] = np.minimum(c, self._count[n] + written)

    def _cut(self, n: np.ndarray) -> None:
        """Mark the newest entry of streams n (mid-episode) as the truncated end of its episode."""
        if len(n) == 0:
            return
        t = (self._pos[n] - 1) % self.stream_capacity
        self._is_last[n, t] = True
        self._truncated[n, t] = ~self._is_first[n, t]

    def _pending(self) -> np.ndarray:
        """Streams whose newest entry is mid-episode (waiting for its action)."""
        newest = (self._pos - 1) % self.stream_capacity
        return (self._count > 0) & ~self._is_last[np.arange(self.num_envs), newest]

    def add(self, obs: Any, action: Any, reward: Any, next_obs: Any, terminated: Any, truncated: Any, reset: Any = None) -> None:
        """One vector-env step; every argument has leading dim num_envs.

        ``next_obs[i]`` must be the final observation where env i's episode ended (not the reset obs).
        ``reset[i]`` (optional) forces env i's ``obs[i]`` to start a new episode (e.g. a resumed run).
        """
        N = self.num_envs
        lead = (N,)
        obs, action, reward, next_obs, terminated, truncated = self._check_step(obs, action, reward, next_obs, terminated, truncated, lead)
        reset = np.zeros(N, dtype=bool) if reset is None else self._check_array("reset", reset, lead, np.dtype(bool), kind="flag")
        envs = np.arange(N)
        pending = self._pending()
        need_first = ~pending | reset
        self._cut(envs[pending & reset])
        cont = envs[~need_first]
        if len(cont):  # the stream's newest entry is this obs: its action is now known
            newest = (self._pos[cont] - 1) % self.stream_capacity
            self._action[cont, newest] = action[cont]
            self._has_action[cont, newest] = True
            self._n_valid += len(cont)
        first = envs[need_first]
        c = self.stream_capacity
        if len(first):
            t = self._pos[first]
            self._put(first, t, {k: v[first] for k, v in obs.items()}, action[first], np.ones(len(first), bool),
                      0.0, False, False, True, False)
        t = (self._pos + need_first) % c
        self._put(envs, t, next_obs, None, np.zeros(N, bool), reward, terminated, truncated, False, terminated | truncated)
        self._advance(envs, 1 + need_first.astype(np.int64))

    def add_batch(self, obs: Any, action: Any, reward: Any, next_obs: Any, terminated: Any, truncated: Any,
                  contiguous: bool = True, stream: int = 0) -> None:
        """Many transitions in time order (leading dim T) into one env stream, vectorised.

        contiguous=True: transition j continues j-1 when j-1 did not end and obs[j] == next_obs[j-1]
        (and transition 0 continues the stream's newest entry when equal); continued transitions write
        one entry, disconnected ones two. contiguous=False (imagined one-step data): skip the equality
        checks, every transition writes two entries (obs as is_first, next_obs as is_last).
        """
        if not 0 <= int(stream) < self.num_envs:
            raise UserError(f"stream={stream} is invalid; expected 0 <= stream < num_envs={self.num_envs}")
        T = len(np.asarray(reward))
        if T == 0:
            return
        obs, action, reward, next_obs, terminated, truncated = self._check_step(obs, action, reward, next_obs, terminated, truncated, (T,))
        s = int(stream)
        c = self.stream_capacity
        ended = terminated | truncated
        cont = np.zeros(T, dtype=bool)
        if contiguous and T > 1:
            same = ~ended[:-1]
            for k in obs:
                same &= (obs[k][1:] == next_obs[k][:-1]).reshape(T - 1, -1).all(axis=1)
            cont[1:] = same
        pending = bool(self._pending()[s])
        if pending:
            newest = (int(self._pos[s]) - 1) % c
            if contiguous:
                cont[0] = all(np.array_equal(obs[k][0], self._obs[k][s, newest]) for k in obs)
            if cont[0]:
                self._action[s, newest] = action[0]
                self._has_action[s, newest] = True
                self._n_valid += 1
            else:
                self._cut(np.array([s]))
        new = ~cont
        csum = np.cumsum(new)
        next_off = np.arange(T) + csum          # entry offset (from pos) of next_obs[j]
        E = int(T + csum[-1])
        keep_from = max(0, E - c)              # a batch longer than the ring keeps its newest entries
        pos = int(self._pos[s])
        # is_first entries (obs[j]) of transitions that start a new stretch
        jf = np.flatnonzero(new)
        off_f = next_off[jf] - 1
        m = off_f >= keep_from
        jf, off_f = jf[m], off_f[m]
        # next_obs entries; their action is the next transition's when it continues them
        nxt_cont = np.zeros(T, dtype=bool)
        nxt_cont[:-1] = cont[1:]
        nxt_action = np.zeros_like(action)
        nxt_action[:-1][cont[1:]] = action[1:][cont[1:]]
        is_last = ended.copy()
        is_last[:-1] |= ~cont[1:]
        jn = np.flatnonzero(next_off >= keep_from)
        sf = np.full(len(jf), s)
        self._put(sf, (pos + off_f) % c, {k: v[jf] for k, v in obs.items()}, action[jf], np.ones(len(jf), bool),
                  0.0, False, False, True, False)
        sn = np.full(len(jn), s)
        self._put(sn, (pos + next_off[jn]) % c, {k: v[jn] for k, v in next_obs.items()}, nxt_action[jn], nxt_cont[jn],
                  reward[jn], terminated[jn], truncated[jn], False, is_last[jn])
        self._advance(np.array([s]), np.array([E]))

    # ------------------------------------------------------------------ sampling
    def _draw(self, sizes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw n (stream, offset) pairs: stream ∝ sizes, offset in [0, size) uniform or recency-weighted."""
        if self.num_envs == 1:
            st = np.zeros(n, dtype=np.int64)
        else:
            cum = np.cumsum(sizes)
            st = np.searchsorted(cum, self.rng.integers(0, cum[-1], size=n), side="right")
        size = sizes[st]
        if self.recency > 0:
            age = np.minimum((self.rng.random(n) ** (1.0 + self.recency) * size).astype(np.int64), size - 1)
            off = size - 1 - age
        else:
            off = self.rng.integers(0, size) if self.num_envs > 1 else self.rng.integers(0, int(size[0]), size=n)
        return st, off

    def _transition_index(self, batch_size: int) -> np.ndarray:
        if batch_size < 1:
            raise UserError(f"batch_size={batch_size} is invalid; expected an integer >= 1")
        if self._n_valid == 0:
            raise UserError("cannot sample from an empty buffer: it holds 0 transitions; add data first")
        if batch_size > self._n_valid:
            raise UserError(f"cannot sample batch_size={batch_size}: the buffer holds only {self._n_valid} transitions")
        c = self.stream_capacity
        has = self._has_action.reshape(-1)
        oldest = self._pos - self._count
        out = np.empty(batch_size, dtype=np.int64)
        filled = 0
        for _ in range(32):  # rejection of entries without a transition (episode ends, stream heads)
            need = batch_size - filled
            st, off = self._draw(self._count, need + need // 4 + 8)
            flat = st * c + (oldest[st] + off) % c
            flat = flat[has[flat]][:need]
            out[filled:filled + len(flat)] = flat
            filled += len(flat)
            if filled == batch_size:
                return out
        valid = np.flatnonzero(has)  # pathological sparsity: exact uniform draw over valid entries
        out[filled:] = valid[self.rng.integers(0, len(valid), size=batch_size - filled)]
        return out

    def _gather(self, arr: np.ndarray, idx: np.ndarray) -> torch.Tensor:
        """arr[N, C, *shape] gathered at flat indices idx (any shape) into a torch tensor.

        One np.take (a memcpy per row) into memory numpy allocates (reused heap pages, no page faults per
        batch; measured faster than a multi-threaded numba gather on this 2-core machine), wrapped without
        a copy. For CUDA the rows go into pinned memory and are copied asynchronously.
        """
        flat = arr.reshape(-1, *arr.shape[2:])
        row_shape = flat.shape[1:]
        if self._pin:
            out = torch.empty(idx.shape + row_shape, dtype=_torch_dtype(arr.dtype), pin_memory=True)
            np.take(flat, idx.reshape(-1), axis=0, out=out.numpy().reshape(idx.size, *row_shape), mode="clip")
            return out.to(self.device, non_blocking=True)
        ridx = idx.reshape(-1)
        if self.gather_threads > 1 and ridx.size * flat[:1].nbytes >= _PARALLEL_MIN_BYTES:
            dst = np.empty((ridx.size, *row_shape), dtype=flat.dtype)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.gather_threads, thread_name_prefix="replay-gather")
            cuts = np.linspace(0, ridx.size, self.gather_threads + 1).astype(np.int64)
            jobs = [self._pool.submit(np.take, flat, ridx[a:b], 0, dst[a:b], "clip") for a, b in zip(cuts[:-1], cuts[1:])]
            for j in jobs:  # np.take releases the GIL: the parts copy in parallel
                j.result()
        else:
            dst = np.take(flat, ridx, axis=0)
        out = torch.from_numpy(dst.reshape(idx.shape + row_shape))
        return out if self.device.type == "cpu" else out.to(self.device)

    def _gather_obs(self, idx: np.ndarray) -> Any:
        if self._dict_obs:
            return {k: self._gather(v, idx) for k, v in self._obs.items()}
        return self._gather(self._obs[None], idx)

    def sample(self, batch_size: int) -> Batch:
        """Transitions [B]: obs, action, reward, next_obs, terminated, truncated, is_first."""
        i = self._transition_index(int(batch_size))
        c = self.stream_capacity
        j = (i // c) * c + (i % c + 1) % c
        return Batch(obs=self._gather_obs(i), action=self._gather(self._action, i), reward=self._gather(self._reward, j),
                     next_obs=self._gather_obs(j), terminated=self._gather(self._terminated, j),
                     truncated=self._gather(self._truncated, j), is_first=self._gather(self._is_first, i))

    def all_transitions(self) -> Batch:
        """Every stored transition [N], in stream order (fit-on-all-data models: PETS, MBPO); no RNG used."""
        i = np.flatnonzero(self._has_action.reshape(-1))
        if len(i) == 0:
            raise UserError("the buffer holds 0 transitions; add data first")
        c = self.stream_capacity
        oldest = (self._pos - self._count) % c  # order each stream oldest first
        i = i[np.argsort((i // c) * c + ((i % c) - oldest[i // c]) % c, kind="stable")]
        j = (i // c) * c + (i % c + 1) % c
        return Batch(obs=self._gather_obs(i), action=self._gather(self._action, i), reward=self._gather(self._reward, j),
                     next_obs=self._gather_obs(j), terminated=self._gather(self._terminated, j),
                     truncated=self._gather(self._truncated, j), is_first=self._gather(self._is_first, i))

    def _sequence_index(self, batch_size: int, length: int) -> np.ndarray:
        if batch_size < 1 or length < 1:
            raise UserError(f"batch_size={batch_size}, length={length} are invalid; expected integers >= 1")
        c = self.stream_capacity
        if length > c:
            raise UserError(f"sequence length {length} is longer than a stream: each env stream holds at most {c} entries (capacity {self.capacity} // num_envs {self.num_envs})")
        avail, starts = self._chunk_starts(length)
        total = int(starts.sum())
        if total == 0:
            raise UserError(f"sequence length {length} is longer than any stream's stored data (longest: {int(avail.max())} complete entries); add more data or sample shorter sequences")
        if batch_size > total:
            raise UserError(f"cannot sample batch_size={batch_size} sequences of length {length}: the buffer holds only {total} such chunks")
        if self._sampled is not None:
            st, off = self._draw_dfs(starts, batch_size)
        else:
            st, off = self._draw(starts, batch_size)
        t0 = self._pos[st] - self._count[st] + off
        return st[:, None] * c + (t0[:, None] + np.arange(length)) % c

    def _chunk_start_entries(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every chunk start as (stream, offset from the stream's oldest entry), streams in order."""
        st = np.repeat(np.arange(self.num_envs), starts)
        first = np.cumsum(starts) - starts
        return st, np.arange(len(st)) - first[st]

    def dfs_probabilities(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Drama's sampling distribution over the chunk starts of `length` now (needs dfs_tau > 0):
        (flat entry index of each start [K], its probability [K]) with p ∝ exp(-count / dfs_tau)."""
        if self._sampled is None:
            raise UserError("dfs_probabilities needs a buffer built with dfs_tau > 0 (e.g. 10, Drama's)")
        st, off = self._chunk_start_entries(self._chunk_starts(int(length))[1])
        c = self.stream_capacity
        flat = st * c + (self._pos[st] - self._count[st] + off) % c
        score = -self._sampled.reshape(-1)[flat] / self.dfs_tau
        w = np.exp(score - score.max()) if len(score) else score
        return flat, w / w.sum()

    def _draw_dfs(self, starts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        st, off = self._chunk_start_entries(starts)
        c = self.stream_capacity
        flat = st * c + (self._pos[st] - self._count[st] + off) % c
        counts = self._sampled.reshape(-1)
        score = -counts[flat] / self.dfs_tau
        w = np.exp(score - score.max()) + 1e-300  # never exactly 0 (choice without replacement needs n > 0 weights)
        pick = self.rng.choice(len(flat), size=n, replace=False, p=w / w.sum())
        counts[flat[pick]] += 1
        return st[pick], off[pick]

    def _chunk_starts(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Per stream: complete entries (a running episode's newest entry has no action yet) and how many
        chunks of `length` start in them."""
        avail = self._count - self._pending()
        return avail, np.maximum(avail - int(length) + 1, 0)

    def num_chunks(self, length: int) -> int:
        """How many distinct sequence chunks of `length` the buffer can sample from now."""
        return int(self._chunk_starts(length)[1].sum())

    def sample_sequences(self, batch_size: int, length: int) -> Batch:
        """Chunks [B, L] in stream layout: obs, action (taken at obs; zeros on is_last), reward /
        terminated / truncated (of the transition arriving at obs; 0 / False on is_first), is_first, is_last."""
        idx = self._sequence_index(int(batch_size), int(length))
        return Batch(obs=self._gather_obs(idx), action=self._gather(self._action, idx), reward=self._gather(self._reward, idx),
                     terminated=self._gather(self._terminated, idx), truncated=self._gather(self._truncated, idx),
                     is_first=self._gather(self._is_first, idx), is_last=self._gather(self._is_last, idx))

    # ------------------------------------------------------------------ state
    def _config(self) -> dict:
        return dict(capacity=self.capacity, obs_space=self.obs_space, action_space=self.action_space,
                    num_envs=self.num_envs, seed=self.seed, recency=self.recency, gather_threads=self.gather_threads,
                    dfs_tau=self.dfs_tau)

    def _arrays(self) -> dict[str, np.ndarray]:
        d = {f"obs{i}": v for i, v in enumerate(self._obs.values())}
        d.update(action=self._action, reward=self._reward, terminated=self._terminated, truncated=self._truncated,
                 is_first=self._is_first, is_last=self._is_last, has_action=self._has_action, pos=self._pos, count=self._count)
        if self._sampled is not None:
            d["sampled"] = self._sampled
        return d

    def state_dict(self) -> dict:
        """Contents, write positions and the sampling RNG (copies)."""
        return dict(version=1, config=self._config(), arrays={k: v.copy() for k, v in self._arrays().items()},
                    n_valid=int(self._n_valid), rng=self.rng.bit_generator.state)

    def load_state_dict(self, state: dict) -> None:
        cfg, mine = state.get("config", {}), self._config()
        for key in ("capacity", "num_envs", "obs_space", "action_space"):
            if cfg.get(key) != mine[key]:
                raise UserError(f"state_dict has {key}={cfg.get(key)!r}; this buffer has {key}={mine[key]!r}")
        arrays = self._arrays()
        for k, dst in arrays.items():
            if k == "sampled" and k not in state["arrays"]:  # saved without dfs_tau: counts start at 0
                dst[...] = 0
                continue
            src = np.asarray(state["arrays"][k])
            if src.shape != dst.shape or src.dtype != dst.dtype:
                raise UserError(f"state_dict array {k!r} has shape {src.shape} dtype {src.dtype}; expected {dst.shape} {dst.dtype}")
            dst[...] = src
        self._n_valid = int(state["n_valid"])
        self.rng.bit_generator.state = state["rng"]

    def save(self, path: str | os.PathLike) -> None:
        """Write the buffer to `path` atomically (temp file in the same folder, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # only the written prefix of each stream is stored: streams fill from index 0 and are full
        # once they wrap, so entries past the largest count were never written
        filled = int(self._count.max())
        meta = dict(version=1, config=self._config(), n_valid=int(self._n_valid), rng=self.rng.bit_generator.state, filled=filled)
        arrays = {k: (v[:, :filled] if v.ndim >= 2 else v) for k, v in self._arrays().items()}
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, __meta__=np.frombuffer(pickle.dumps(meta), dtype=np.uint8), **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> "ReplayBuffer":
        """A buffer saved by `save` (same contents, positions and sampling RNG)."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"replay buffer file {str(path)!r} does not exist; expected a file written by ReplayBuffer.save")
        with np.load(path, allow_pickle=False) as z:
            meta = pickle.loads(z["__meta__"].tobytes())
            cfg = meta["config"]
            buf = cls(cfg["capacity"], cfg["obs_space"], cfg["action_space"], num_envs=cfg["num_envs"], seed=cfg["seed"],
                      recency=cfg["recency"], gather_threads=cfg.get("gather_threads", 1), dfs_tau=cfg.get("dfs_tau", 0.0),
                      device=device if device is not None else "cpu")
            filled = int(meta.get("filled", buf.stream_capacity))
            for k, dst in buf._arrays().items():
                if k not in z.files:
                    raise UserError(f"replay buffer file {str(path)!r} lacks array {k!r}; it was not written by ReplayBuffer.save of this version")
                src = z[k]
                want = (dst.shape[0], filled, *dst.shape[2:]) if dst.ndim >= 2 else dst.shape
                if src.shape != want or src.dtype != dst.dtype:
                    raise UserError(f"replay buffer file {str(path)!r}: array {k!r} has shape {src.shape} dtype {src.dtype}; expected {want} {dst.dtype}")
                if dst.ndim >= 2:
                    dst[:, :filled] = src
                else:
                    dst[...] = src
        buf._n_valid = int(meta["n_valid"])
        buf.rng.bit_generator.state = meta["rng"]
        return buf


__all__ = ["ReplayBuffer", "Batch"]
