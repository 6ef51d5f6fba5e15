"""ReplayBuffer: stream layout, validity, wrap-around, add_batch, Dict/pixel obs, save/load, errors.

Observations encode (env, episode, time-in-episode, global step) so every sampled transition and
chunk can be checked against a plain-Python reference of the stream layout.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from mbrl.data import Batch, ReplayBuffer
from mbrl.errors import UserError

torch.set_num_threads(1)

OBS = spaces.Box(-np.inf, np.inf, (4,), np.float32)
ACT = spaces.Box(-1.0, 1.0, (2,), np.float32)


def act_of(o):  # deterministic action from an encoded obs [..., 4]
    o = np.asarray(o, np.float32)
    return np.stack([o[..., 0] * 0.1 + o[..., 2] * 0.01, o[..., 1] * 0.01], -1).astype(np.float32)


def rew_of(o):  # reward of the transition arriving at encoded obs o
    o = np.asarray(o, np.float32)
    return (o[..., 0] * 1000 + o[..., 1] * 10 + o[..., 2]).astype(np.float32)


class ToyVec:
    """N envs, random episode lengths, SAME_STEP autoreset: ends give the final obs separately."""

    def __init__(self, n, seed=0, max_len=12, trunc_p=0.3):
        self.n, self.rng, self.max_len, self.trunc_p = n, np.random.default_rng(seed), max_len, trunc_p
        self.ep = np.zeros(n, int)
        self.t = np.zeros(n, int)
        self.g = 0
        self.len = self.rng.integers(1, max_len, n)

    def obs(self):
        return np.stack([np.arange(self.n), self.ep, self.t, np.full(self.n, self.g)], -1).astype(np.float32)

    def step(self):
        obs = self.obs()
        self.g += 1
        self.t += 1
        end = self.t >= self.len
        trunc_mask = self.rng.random(self.n) < self.trunc_p
        terminated, truncated = end & ~trunc_mask, end & trunc_mask
        next_obs = self.obs()  # final obs where ended
        self.ep[end] += 1
        self.t[end] = 0
        self.len[end] = self.rng.integers(1, self.max_len, end.sum())
        return obs, act_of(obs), rew_of(next_obs), next_obs, terminated, truncated


class RefStream:
    """Plain-Python stream layout (the spec), one list of entries per env, newest C kept."""

    def __init__(self, n, c):
        self.s = [[] for _ in range(n)]
        self.c = c

    def add(self, i, obs, action, reward, next_obs, term, trunc, reset=False):
        s = self.s[i]
        pending = bool(s) and not s[-1]["is_last"]
        if pending and reset:
            s[-1]["is_last"] = True
            s[-1]["truncated"] = not s[-1]["is_first"]
        if not pending or reset:
            s.append(dict(obs=obs.copy(), action=action.copy(), reward=0.0, terminated=False, truncated=False, is_first=True, is_last=False))
        else:
            s[-1]["action"] = action.copy()
        s.append(dict(obs=next_obs.copy(), action=None, reward=float(reward), terminated=bool(term), truncated=bool(trunc), is_first=False, is_last=bool(term or trunc)))
        del s[:-self.c]

    def transitions(self):
        out = {}
        for s in self.s:
            for a, b in zip(s[:-1], s[1:]):
                if a["action"] is not None:
                    out[tuple(a["obs"])] = (a, b)
        return out

    def chunks(self, length):
        out = {}
        for s in self.s:
            usable = s if (not s or s[-1]["is_last"]) else s[:-1]
            for k in range(len(usable) - length + 1):
                out[tuple(usable[k]["obs"])] = usable[k:k + length]
        return out


def fill(buf, ref, vec, steps):
    for _ in range(steps):
        o, a, r, no, te, tr = vec.step()
        buf.add(o, a, r, no, te, tr)
        for i in range(vec.n):
            ref.add(i, o[i], a[i], r[i], no[i], te[i], tr[i])


def sample_many(fn, n, most):
    """n samples in batches of at most `most` (a batch may not exceed what is stored)."""
    parts = [fn(min(most, n - k)) for k in range(0, n, most)]
    return Batch({k: torch.cat([p[k] for p in parts]) for k in parts[0]})


def check_transitions(buf, ref, n=3000):
    expected = ref.transitions()
    assert len(buf) == len(expected)
    b = sample_many(buf.sample, n, len(buf))
    seen = set()
    for k in range(n):
        key = tuple(b.obs[k].numpy())
        assert key in expected, f"sampled a transition that is not valid: {key}"
        a, nxt = expected[key]
        seen.add(key)
        np.testing.assert_array_equal(b.next_obs[k].numpy(), nxt["obs"])
        np.testing.assert_array_equal(b.action[k].numpy(), a["action"])
        assert b.reward[k].item() == nxt["reward"]
        assert b.terminated[k].item() == nxt["terminated"] and b.truncated[k].item() == nxt["truncated"]
        assert b.is_first[k].item() == a["is_first"]
    return seen, expected


def check_chunks(buf, ref, length, n=400):
    expected = ref.chunks(length)
    b = sample_many(lambda k: buf.sample_sequences(k, length), n, len(expected))
    assert b.obs.shape == (n, length, 4) and b.reward.shape == (n, length)
    seen = set()
    for k in range(n):
        key = tuple(b.obs[k, 0].numpy())
        assert key in expected, f"sampled an invalid chunk starting at {key}"
        seen.add(key)
        for t, e in enumerate(expected[key]):
            np.testing.assert_array_equal(b.obs[k, t].numpy(), e["obs"])
            want_a = np.zeros(2, np.float32) if e["action"] is None else e["action"]
            np.testing.assert_array_equal(b.action[k, t].numpy(), want_a)
            assert b.reward[k, t].item() == e["reward"]
            for f in ("terminated", "truncated", "is_first", "is_last"):
                assert b[f][k, t].item() == e[f], (f, key, t)
    return seen, expected


def test_multi_env_streams_wraparound_match_reference():
    n, cap = 3, 3 * 40
    buf, ref, vec = ReplayBuffer(cap, OBS, ACT, num_envs=n, seed=1), RefStream(n, cap // n), ToyVec(n, seed=2)
    fill(buf, ref, vec, 10)  # partly filled
    check_transitions(buf, ref, 500)
    fill(buf, ref, vec, 137)  # wrapped several times
    assert buf.num_entries == cap
    seen, expected = check_transitions(buf, ref)
    assert seen == set(expected)  # every valid transition is reachable
    allt = buf.all_transitions()
    assert len(allt.reward) == len(buf) and set(map(tuple, allt.obs.numpy())) == set(ref.transitions())
    for e in range(n):  # stream order: oldest first, global step increasing within each env
        g = allt.obs[allt.obs[:, 0] == e, 3]
        assert (g[1:] >= g[:-1]).all()
    np.testing.assert_array_equal(allt.reward.numpy(), rew_of(allt.next_obs.numpy()))
    seen, expected = check_chunks(buf, ref, 8, 1500)
    assert seen == set(expected)
    b = buf.sample_sequences(80, 8)
    env = b.obs[..., 0]
    assert (env == env[:, :1]).all()  # a chunk never mixes envs
    # episode ends: next_obs is the final obs (t = episode length), never the reset obs (t = 0)
    b = sample_many(buf.sample, 3000, len(buf))
    ended = b.terminated | b.truncated
    assert ended.any() and (b.next_obs[ended, 2] > 0).all()
    assert (b.next_obs[~ended, 2] == b.obs[~ended, 2] + 1).all()
    # stream layout: action zero on the last obs, reward/terminated zero on is_first
    s = buf.sample_sequences(60, 10)
    assert (s.action[s.is_last] == 0).all() and (s.reward[s.is_first] == 0).all() and not s.terminated[s.is_first].any()
    assert (s.is_first == (s.obs[..., 2] == 0)).all()
    # newest complete data is present after wrap (global step of the newest entries)
    assert b.next_obs[:, 3].max().item() == vec.g


def test_newest_running_entry_excluded_from_chunks_and_transitions():
    buf = ReplayBuffer(100, OBS, ACT)
    vec = ToyVec(1, max_len=10**9)
    for _ in range(5):
        o, a, r, no, te, tr = vec.step()
        buf.add(o, a, r, no, te, tr)
    assert len(buf) == 5 and buf.num_entries == 6
    s = buf.sample_sequences(1, 5)  # only one chunk: entries 0..4; the running head (t=5) has no action yet
    assert (s.obs[:, :, 2] == torch.arange(5.0)).all()
    with pytest.raises(UserError, match="longer than any stream"):
        buf.sample_sequences(1, 6)
    assert sample_many(buf.sample, 200, 5).obs[:, 2].max().item() == 4


def test_reset_mid_episode_cuts_stream():
    n = 2
    buf, ref, vec = ReplayBuffer(2 * 30, OBS, ACT, num_envs=n), RefStream(n, 30), ToyVec(n, max_len=10**9)
    fill(buf, ref, vec, 4)
    # resumed run: env 0 restarts mid-episode with a new episode, env 1 continues
    vec.ep[0] += 1
    vec.t[0] = 0
    o, a, r, no, te, tr = vec.step()
    reset = np.array([True, False])
    buf.add(o, a, r, no, te, tr, reset=reset)
    for i in range(n):
        ref.add(i, o[i], a[i], r[i], no[i], te[i], tr[i], reset=reset[i])
    fill(buf, ref, vec, 3)
    check_transitions(buf, ref, 500)
    check_chunks(buf, ref, 6, 300)
    s = sample_many(lambda k: buf.sample_sequences(k, 9), 3, 1)  # the only 9-chunk: env 0's, across the cut
    e0 = s.obs[:, 0, 0] == 0
    assert e0.any()
    cut = s.is_last[e0][:, 4]
    assert cut.all() and s.truncated[e0][:, 4].all() and s.is_first[e0][:, 5].all()
    assert (s.action[e0][:, 4] == 0).all()
    b = sample_many(buf.sample, 500, len(buf))
    assert not ((b.obs[:, 0] == 0) & (b.obs[:, 1] == 0) & (b.obs[:, 2] == 4)).any()  # dangling entry starts nothing


def _episodes_dataset(seed=0):
    """Transitions of 4 episodes: terminated, truncated, an unflagged break, and a running tail."""
    vec = ToyVec(1, seed=seed, max_len=9, trunc_p=0.5)
    rows = []
    while vec.ep[0] < 4:
        rows.append([x[0] for x in vec.step()])
    rows.pop()  # episode 3 is incomplete at the end
    obs, act, rew, nobs, te, tr = (np.stack(c) for c in zip(*rows))
    # unflagged break: cut episode 1's last transition flags (obs[j+1] != next_obs[j] still breaks it)
    j = int(np.flatnonzero((te | tr))[1])
    te[j] = tr[j] = False
    return obs, act, rew, nobs, te, tr


def test_add_batch_continuity_equals_step_adds():
    obs, act, rew, nobs, te, tr = _episodes_dataset()
    T = len(rew)
    a = ReplayBuffer(200, OBS, ACT)
    starts = 0
    for j in range(T):  # reference: step adds with reset where a transition does not continue
        brk = j > 0 and not (te[j - 1] or tr[j - 1]) and not np.array_equal(obs[j], nobs[j - 1])
        starts += brk or j == 0 or te[j - 1] or tr[j - 1]
        a.add(obs[j:j + 1], act[j:j + 1], rew[j:j + 1], nobs[j:j + 1], te[j:j + 1], tr[j:j + 1], reset=np.array([brk]))
    b = ReplayBuffer(200, OBS, ACT)
    k = T // 2
    b.add_batch(obs[:k], act[:k], rew[:k], nobs[:k], te[:k], tr[:k])  # two calls: continues the pending head
    b.add_batch(obs[k:], act[k:], rew[k:], nobs[k:], te[k:], tr[k:])
    assert b.num_entries == T + starts == a.num_entries and len(a) == len(b) == T
    for name in ("_action", "_reward", "_terminated", "_is_first", "_has_action", "_pos", "_count"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a._obs[None], b._obs[None])
    # the unflagged break ends with is_last (in add via the reset cut it is also truncated)
    np.testing.assert_array_equal(a._is_last, b._is_last)
    s = sample_many(b.sample, 2000, len(b))
    np.testing.assert_array_equal(s.next_obs[:, 2].numpy(), s.obs[:, 2].numpy() + 1)
    np.testing.assert_array_equal(s.action.numpy(), act_of(s.obs.numpy()))
    np.testing.assert_array_equal(s.reward.numpy(), rew_of(s.next_obs.numpy()))


def test_add_batch_imagined_data_and_overflow():
    rng = np.random.default_rng(0)
    T = 50
    obs = rng.normal(size=(T, 4)).astype(np.float32)
    nobs = rng.normal(size=(T, 4)).astype(np.float32)
    act = rng.uniform(-1, 1, (T, 2)).astype(np.float32)
    rew = rng.normal(size=T).astype(np.float32)
    te = rng.random(T) < 0.2
    tr = np.zeros(T, bool)
    for contiguous in (True, False):
        buf = ReplayBuffer(1000, OBS, ACT)
        buf.add_batch(obs, act, rew, nobs, te, tr, contiguous=contiguous)
        assert len(buf) == T and buf.num_entries == 2 * T
        b = sample_many(buf.sample, 500, T)
        j = np.array([np.flatnonzero((obs == o).all(1))[0] for o in b.obs.numpy()])
        np.testing.assert_array_equal(b.next_obs.numpy(), nobs[j])
        np.testing.assert_array_equal(b.action.numpy(), act[j])
        np.testing.assert_array_equal(b.reward.numpy(), rew[j])
        np.testing.assert_array_equal(b.terminated.numpy(), te[j])
        assert not b.truncated.any() and b.is_first.all()
    # more than the ring holds: keeps the newest transitions
    buf = ReplayBuffer(30, OBS, ACT)
    buf.add_batch(obs, act, rew, nobs, te, tr, contiguous=False)
    assert len(buf) == 15 and buf.num_entries == 30
    assert set(map(tuple, sample_many(buf.sample, 300, 15).obs.numpy())) == set(map(tuple, obs[-15:]))


def test_dict_obs_and_uint8_pixels():
    n = 2
    space = spaces.Dict({"pixels": spaces.Box(0, 255, (3, 8, 8), np.uint8), "state": OBS})
    buf = ReplayBuffer(2 * 50, space, spaces.Discrete(5), num_envs=n)
    vec = ToyVec(n)

    def pix(o):  # pixels encode (env, episode, time)
        v = (o[:, 0] * 100 + o[:, 1] * 10 + o[:, 2]) % 256
        return np.broadcast_to(v[:, None, None, None], (len(o), 3, 8, 8)).astype(np.uint8)

    for _ in range(80):
        o, a, r, no, te, tr = vec.step()
        buf.add({"pixels": pix(o), "state": o}, (o[:, 2] % 5).astype(np.int64), r,
                {"pixels": pix(no), "state": no}, te, tr)
    assert buf._obs["pixels"].dtype == np.uint8
    b = buf.sample(60)
    assert b.obs["pixels"].dtype == torch.uint8 and b.next_obs["pixels"].shape == (60, 3, 8, 8)
    assert b.action.dtype == torch.int64 and b.action.shape == (60,)
    np.testing.assert_array_equal(b.obs["pixels"].numpy(), pix(b.obs["state"].numpy()))
    np.testing.assert_array_equal(b.next_obs["pixels"].numpy(), pix(b.next_obs["state"].numpy()))
    np.testing.assert_array_equal(b.action.numpy(), b.obs["state"][:, 2].numpy() % 5)
    s = buf.sample_sequences(8, 6)
    assert s.obs["pixels"].shape == (8, 6, 3, 8, 8) and s.obs["pixels"].dtype == torch.uint8
    assert isinstance(s, Batch) and s.action.dtype == torch.int64
    with pytest.raises(UserError, match=r"obs\['pixels'\] has dtype float32; expected uint8"):
        buf.add({"pixels": pix(o).astype(np.float32), "state": o}, np.zeros(n, np.int64), r, {"pixels": pix(no), "state": no}, te, tr)
    with pytest.raises(UserError, match="expected a dict with keys"):
        buf.add({"pixels": pix(o)}, np.zeros(n, np.int64), r, {"pixels": pix(no), "state": no}, te, tr)


def test_save_load_round_trip(tmp_path):
    n = 2
    buf, vec = ReplayBuffer(2 * 30, OBS, ACT, num_envs=n, seed=5, recency=1.0), ToyVec(n, seed=3)
    for _ in range(47):
        buf.add(*vec.step())
    buf.sample(10)  # advance the RNG
    path = tmp_path / "sub" / "replay.npz"
    buf.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["replay.npz"]  # temp file renamed away
    other = ReplayBuffer.load(path)
    for k, v in buf._arrays().items():
        np.testing.assert_array_equal(v, other._arrays()[k], err_msg=k)
    assert len(other) == len(buf) and other.recency == 1.0
    for x, y in ((buf.sample(32), other.sample(32)), (buf.sample_sequences(4, 7), other.sample_sequences(4, 7))):
        for k in x:
            assert torch.equal(x[k], y[k]), k
    # state_dict round trip into a fresh buffer, then both continue identically
    fresh = ReplayBuffer(2 * 30, OBS, ACT, num_envs=n, seed=99, recency=1.0)
    fresh.load_state_dict(buf.state_dict())
    step = vec.step()
    buf.add(*step)
    fresh.add(*step)
    x, y = buf.sample(16), fresh.sample(16)
    assert all(torch.equal(x[k], y[k]) for k in x)
    with pytest.raises(UserError, match="capacity"):
        ReplayBuffer(100, OBS, ACT, num_envs=n).load_state_dict(buf.state_dict())
    with pytest.raises(UserError, match="does not exist"):
        ReplayBuffer.load(tmp_path / "missing.npz")


def test_save_stores_only_written_entries(tmp_path):
    """A large, mostly empty buffer saves only what was written, and loads back identical."""
    buf, vec = ReplayBuffer(2 * 50_000, OBS, ACT, num_envs=2, seed=1), ToyVec(2, seed=4)
    for _ in range(40):
        buf.add(*vec.step())
    path = tmp_path / "replay.npz"
    buf.save(path)
    full_bytes = sum(v.nbytes for v in buf._arrays().values())
    assert path.stat().st_size < full_bytes / 100
    other = ReplayBuffer.load(path)
    for k, v in buf._arrays().items():
        np.testing.assert_array_equal(v, other._arrays()[k], err_msg=k)
    x, y = buf.sample_sequences(8, 5), other.sample_sequences(8, 5)
    assert all(torch.equal(x[k], y[k]) for k in x)


def test_recency_weights_prefer_new_data():
    ages = {}
    for r in (0.0, 3.0):
        buf, vec = ReplayBuffer(1000, OBS, ACT, recency=r, seed=0), ToyVec(1, max_len=10**9)
        for _ in range(999):
            buf.add(*vec.step())
        ages[r] = float((vec.g - sample_many(buf.sample, 4000, 999).obs[:, 3]).mean())
        s = buf.sample_sequences(900, 10)
        assert (s.obs[:, 1:, 3] == s.obs[:, :-1, 3] + 1).all()
    assert 450 < ages[0.0] < 550 and ages[3.0] < 0.5 * ages[0.0]


def test_errors_are_one_clear_line():
    buf = ReplayBuffer(20, OBS, ACT, num_envs=2)
    with pytest.raises(UserError, match="empty buffer"):
        buf.sample(1)
    vec = ToyVec(2, max_len=10**9)
    for _ in range(3):
        buf.add(*vec.step())
    with pytest.raises(UserError, match=r"batch_size=7: the buffer holds only 6 transitions"):
        buf.sample(7)
    with pytest.raises(UserError, match="longer than a stream: each env stream holds at most 10"):
        buf.sample_sequences(1, 11)
    with pytest.raises(UserError, match="holds only 2 such chunks"):
        buf.sample_sequences(3, 3)
    o, a, r, no, te, tr = vec.step()
    with pytest.raises(UserError, match=r"^obs has shape \(2, 3\); expected \(2, 4\)$"):
        buf.add(o[:, :3], a, r, no, te, tr)
    with pytest.raises(UserError, match=r"^action has shape \(3, 2\); expected \(2, 2\)$"):
        buf.add(o, np.zeros((3, 2), np.float32), r, no, te, tr)
    with pytest.raises(UserError, match="terminated has dtype <U1"):
        buf.add(o, a, r, no, np.array(["a", "b"]), tr)
    with pytest.raises(UserError, match="expected integer indices"):
        ReplayBuffer(20, OBS, spaces.Discrete(3)).add(o[:1], np.array([0.5]), r[:1], no[:1], te[:1], tr[:1])
    with pytest.raises(UserError, match="capacity=3 gives 1 entries per env stream"):
        ReplayBuffer(3, OBS, ACT, num_envs=2)
    for e in (UserError("x"),):
        assert isinstance(e, ValueError)
    assert len(buf) == 6  # failed adds changed nothing


def test_for_env_and_torch_inputs():
    import gymnasium as gym

    env = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2)
    buf = ReplayBuffer.for_env(env, 64)
    assert buf.num_envs == 2 and buf.stream_capacity == 32
    o, _ = env.reset(seed=0)
    a = env.action_space.sample()
    no, r, te, tr, _ = env.step(a)
    buf.add(torch.as_tensor(o), torch.as_tensor(a), torch.as_tensor(r), no, te, tr)
    assert len(buf) == 2
    env.close()


def test_parallel_gather_matches_serial():
    space = spaces.Box(0, 255, (3, 64, 64), np.uint8)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (301, 3, 64, 64), dtype=np.uint8)
    bufs = [ReplayBuffer(400, space, ACT, seed=3, gather_threads=k) for k in (1, 2)]
    for b in bufs:
        b.add_batch(frames[:-1], np.zeros((300, 2), np.float32), np.ones(300), frames[1:], np.zeros(300), np.zeros(300))
    x, y = bufs[0].sample(200), bufs[1].sample(200)  # 200 x 12 KiB rows: the parallel path
    assert all(torch.equal(x[k], y[k]) for k in x)
    x, y = bufs[0].sample_sequences(16, 64), bufs[1].sample_sequences(16, 64)
    assert all(torch.equal(x[k], y[k]) for k in x)
    k = (frames[None] == x.obs[:, 0].numpy()[:, None]).all(axis=(2, 3, 4)).argmax(1)
    np.testing.assert_array_equal(x.obs.numpy(), frames[k[:, None] + np.arange(64)])  # consecutive stored frames


# ---------------------------------------------------------------- Drama's dynamic frequency-based sampling
def _dfs_buffer(tau, steps=40, n=2, seed=0):
    buf, vec = ReplayBuffer(1000, OBS, ACT, num_envs=n, dfs_tau=tau, seed=seed), ToyVec(n, max_len=10**9)
    for _ in range(steps):
        buf.add(*vec.step())
    return buf, vec


def test_dfs_probabilities_follow_drama_rule():
    """P(start) ∝ exp(-count / tau) over exactly the valid chunk starts of every stream."""
    buf, _ = _dfs_buffer(2.0)
    counts = np.random.default_rng(1).integers(0, 7, buf._sampled.shape)
    buf._sampled[...] = counts
    flat, p = buf.dfs_probabilities(5)
    assert len(flat) == buf.num_chunks(5) == 2 * (40 - 5 + 1) and len(set(flat.tolist())) == len(flat)
    w = np.exp(-counts.reshape(-1)[flat] / 2.0)
    np.testing.assert_allclose(p, w / w.sum(), rtol=1e-12)
    # the draws follow p (counts restored after each draw, so p stays fixed): per count value, 4 sigma
    c = buf.stream_capacity
    hits = np.zeros(len(flat))
    where = {f: i for i, f in enumerate(flat.tolist())}
    for _ in range(3000):
        s = buf.sample_sequences(1, 5)
        env, step = int(s.obs[0, 0, 0]), int(s.obs[0, 0, 3])
        hits[where[env * c + step]] += 1
        assert buf._sampled.sum() == counts.sum() + 1  # the start's count went up by one
        buf._sampled[...] = counts
    for v in np.unique(counts.reshape(-1)[flat]):
        grp = counts.reshape(-1)[flat] == v
        exp_p = p[grp].sum()
        assert abs(hits[grp].sum() / 3000 - exp_p) < 4 * np.sqrt(exp_p * (1 - exp_p) / 3000), (v, hits[grp].sum() / 3000, exp_p)


def test_dfs_evens_training_counts_and_favours_new_data():
    """Drama's purpose: every start is trained on about equally often, and new data is drawn first."""
    frac_new, spread = {}, {}
    for tau in (0.0, 1.0):
        buf, vec = _dfs_buffer(tau, steps=200, n=1)
        g = np.concatenate([buf.sample_sequences(8, 10).obs[:, 0, 3].numpy() for _ in range(100)]).astype(int)
        times = np.bincount(g, minlength=191)  # how often each of the 191 chunk starts was drawn
        spread[tau] = float(times.std())
        if tau:
            assert (times == buf._sampled[0][:191]).all()
        for _ in range(100):
            buf.add(*vec.step())
        g = np.concatenate([buf.sample_sequences(8, 10).obs[:, 0, 3].numpy() for _ in range(30)])
        frac_new[tau] = float((g >= 200).mean())
    assert frac_new[0.0] < 0.45 and frac_new[1.0] > 0.75, frac_new  # uniform: ~100/291 of the starts are new
    assert spread[1.0] < 0.5 * spread[0.0], spread  # uniform: Poisson spread (std ~2 at mean 4.2)


def test_dfs_counts_saved_and_loaded(tmp_path):
    buf, _ = _dfs_buffer(10.0)
    for _ in range(20):
        buf.sample_sequences(4, 6)
    buf.save(tmp_path / "b.npz")
    back = ReplayBuffer.load(tmp_path / "b.npz")
    assert back.dfs_tau == 10.0 and (back._sampled == buf._sampled).all() and buf._sampled.sum() == 80
    torch.testing.assert_close(back.sample_sequences(4, 6).obs, buf.sample_sequences(4, 6).obs)
    with pytest.raises(UserError, match="dfs_tau"):
        ReplayBuffer(10, OBS, ACT, dfs_tau=-1)
    from mbrl.algos.common import replay_sampling

    assert replay_sampling({"sampling": "dfs", "dfs_tau": 10}, "algo=dreamer") == {"dfs_tau": 10.0}
    assert replay_sampling({"sampling": "uniform"}, "algo=dreamer") == {}
    with pytest.raises(UserError, match="valid: uniform, dfs"):
        replay_sampling({"sampling": "drama"}, "algo=dreamer")
