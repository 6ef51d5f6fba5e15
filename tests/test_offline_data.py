"""Offline dataset loaders: exact D4RL and Minari formats written here, real h5py / minari."""
from __future__ import annotations

import json
import os
import warnings

import h5py
import numpy as np
import pytest

from mbrl.envs.offline_scores import D4RL_REF_SCORES, d4rl_normalized_score
from mbrl.data.offline import load, load_d4rl, load_minari
from mbrl.errors import UserError


def _episodes(lengths, term_last, obs_dim=3, act_dim=2, seed=0):
    """Concatenated episodes; obs[t] encodes (episode, step) so successors are checkable."""
    rng = np.random.default_rng(seed)
    obs, nobs, act, rew, term, tout = [], [], [], [], [], []
    for e, (T, te) in enumerate(zip(lengths, term_last)):
        o = np.zeros((T + 1, obs_dim), np.float32)
        o[:, 0] = e
        o[:, 1] = np.arange(T + 1)
        o[:, 2:] = rng.normal(size=(T + 1, obs_dim - 2))
        obs.append(o[:-1]); nobs.append(o[1:])
        act.append(rng.uniform(-1, 1, (T, act_dim)).astype(np.float32))
        rew.append(np.full(T, float(e + 1), np.float32))
        t = np.zeros(T, bool); to = np.zeros(T, bool)
        (t if te else to)[-1] = True
        term.append(t); tout.append(to)
    c = np.concatenate
    return dict(observations=c(obs), next_observations=c(nobs), actions=c(act), rewards=c(rew), terminals=c(term), timeouts=c(tout))


def _write(path, data, drop=(), **attrs):
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            if k not in drop:
                f.create_dataset(k, data=v)
        for k, v in attrs.items():
            f.attrs[k] = v
    return path


def test_d4rl_with_next_observations(tmp_path):
    data = _episodes([4, 3, 5], [True, False, False])
    ds = load_d4rl(_write(tmp_path / "hopper-medium-v2.hdf5", data))
    assert len(ds) == 12
    np.testing.assert_array_equal(ds.next_obs, data["next_observations"])
    np.testing.assert_array_equal(ds.terminated, data["terminals"])
    np.testing.assert_array_equal(ds.truncated, data["timeouts"])
    np.testing.assert_allclose(ds.episode_returns(), [4.0, 6.0, 15.0])
    assert ds.eval_env == "gym/Hopper-v5"
    assert ds.ref_scores == D4RL_REF_SCORES["hopper"]
    np.testing.assert_allclose(ds.normalized_score(np.array([3234.3, -20.272305])), [100.0, 0.0])


def test_to_buffer_keeps_every_transition(tmp_path):
    data = _episodes([4, 3, 5, 2], [True, False, False, True])
    ds = load_d4rl(_write(tmp_path / "hopper-medium-v2.hdf5", data))
    buf = ds.to_buffer()
    assert ds.entries_needed() == 14 + 4  # one entry per transition plus one per episode start
    assert len(buf) == len(ds) == 14
    allt = buf.all_transitions()
    np.testing.assert_array_equal(allt["obs"].numpy(), data["observations"])
    np.testing.assert_array_equal(allt["next_obs"].numpy(), data["next_observations"])


def test_d4rl_without_next_observations_builds_successors_and_boundaries(tmp_path):
    # ep0 terminates (len 4), ep1 times out (len 3), ep2 times out (len 5) at the end of the file
    data = _episodes([4, 3, 5], [True, False, False])
    ds = load_d4rl(_write(tmp_path / "walker2d-medium-replay-v2.hdf5", data, drop=("next_observations",)), name="walker2d-medium-replay-v2")
    # the last step of each timed-out episode has no recorded successor -> dropped
    assert len(ds) == 12 - 2 and ds.metadata["dropped_transitions"] == 2
    # every non-terminal next obs is the true successor: same episode, step + 1
    live = ~ds.terminated
    np.testing.assert_array_equal(ds.next_obs[live, 0], ds.obs[live, 0])
    np.testing.assert_array_equal(ds.next_obs[live, 1], ds.obs[live, 1] + 1)
    np.testing.assert_array_equal(ds.next_obs[live], data["next_observations"][np.flatnonzero(~data["timeouts"])][live])
    # episode boundaries: ep0 ends terminated at its step 3; ep1 and ep2 end truncated one step early
    ends = np.flatnonzero(ds.episode_ends)
    np.testing.assert_array_equal(ends, [3, 5, 9])
    assert ds.terminated[3] and not ds.truncated[3]
    assert ds.truncated[5] and ds.truncated[9] and ds.terminated.sum() == 1
    np.testing.assert_allclose(ds.episode_returns(), [4.0, 4.0, 12.0])
    assert ds.eval_env == "gym/Walker2d-v5"
    np.testing.assert_allclose(ds.normalized_score(4592.3), 100.0)


def test_d4rl_file_ending_mid_episode(tmp_path):
    data = _episodes([4, 3], [False, False])
    data["timeouts"][-1] = False  # recording stopped mid-episode
    ds = load_d4rl(_write(tmp_path / "x.hdf5", data, drop=("next_observations",)))
    assert len(ds) == 5 and ds.truncated[-1] and not ds.terminated.any()
    ds2 = load_d4rl(_write(tmp_path / "y.hdf5", data))  # with next_observations every step stays
    assert len(ds2) == 7 and ds2.truncated[-1]


@pytest.mark.parametrize("robot,ret,score", [("halfcheetah", 12135.0, 100.0), ("ant", -325.6, 0.0), ("walker2d", 1.629008, 0.0)])
def test_d4rl_reference_scores(robot, ret, score):
    assert d4rl_normalized_score(f"{robot}-medium-v2", ret) == pytest.approx(score)


def test_d4rl_errors(tmp_path, monkeypatch):
    data = _episodes([4], [True])
    with pytest.raises(UserError, match=r"missing keys \['timeouts'\]"):
        load_d4rl(_write(tmp_path / "a.hdf5", data, drop=("timeouts",)))
    bad = dict(data, rewards=data["rewards"][:-1])
    with pytest.raises(UserError, match="length mismatch.*'observations' has 4 rows but 'rewards' has 3"):
        load_d4rl(_write(tmp_path / "b.hdf5", bad))
    (tmp_path / "c.hdf5").write_text("not hdf5 at all")
    with pytest.raises(UserError, match="not a readable HDF5 file"):
        load_d4rl(tmp_path / "c.hdf5")
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    with pytest.raises(UserError) as e:
        load("d4rl/hopper-expert-v2")
    msg = str(e.value)
    assert str(tmp_path / "hopper-expert-v2.hdf5") in msg and "\n" not in msg
    monkeypatch.delenv("D4RL_DATASET_DIR")
    with pytest.raises(UserError, match="D4RL_DATASET_DIR"):
        load("d4rl/hopper-expert-v2")
    with pytest.raises(UserError, match="valid: d4rl/<name>"):
        load("hopper-medium-v2")
    # the by-name route reads a file given by dataset_path or the env var
    _write(tmp_path / "hopper-medium-v2.hdf5", data)
    assert len(load("d4rl/hopper-medium-v2", dataset_path=str(tmp_path / "hopper-medium-v2.hdf5"))) == 4
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    assert len(load("d4rl/hopper-medium-v2")) == 4


def _write_minari_by_hand(root, dataset_id, lengths, terms, meta=None):
    d = root / dataset_id / "data"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with h5py.File(d / "main_data.hdf5", "w") as f:
        for i, (T, te) in enumerate(zip(lengths, terms)):
            g = f.create_group(f"episode_{i}")
            g.create_dataset("observations", data=rng.normal(size=(T + 1, 3)).astype(np.float32))
            g.create_dataset("actions", data=rng.uniform(-1, 1, (T, 2)).astype(np.float32))
            g.create_dataset("rewards", data=np.ones(T))
            t = np.zeros(T, bool); t[-1] = te
            g.create_dataset("terminations", data=t)
            g.create_dataset("truncations", data=~t & (np.arange(T) == T - 1))
    (d / "metadata.json").write_text(json.dumps(meta or {}))
    return d / "main_data.hdf5"


def test_minari_by_hand_and_errors(tmp_path, monkeypatch):
    _write_minari_by_hand(tmp_path, "ns/task/data-v0", [3, 5, 2], [True, False, True], {"ref_min_score": 0.0, "ref_max_score": 10.0})
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    ds = load("minari/ns/task/data-v0")
    assert len(ds) == 10
    np.testing.assert_array_equal(np.flatnonzero(ds.episode_ends), [2, 7, 9])
    np.testing.assert_array_equal(np.flatnonzero(ds.terminated), [2, 9])
    np.testing.assert_allclose(ds.normalized_score(ds.episode_returns()), [30.0, 50.0, 20.0])
    with pytest.raises(UserError, match=r"expected .*nope-v0/data/main_data.hdf5"):
        load("minari/nope-v0")
    # an episode missing a key
    p = _write_minari_by_hand(tmp_path, "bad-v0", [3], [True])
    with h5py.File(p, "a") as f:
        del f["episode_0/truncations"]
    with pytest.raises(UserError, match=r"episode_0 misses \['truncations'\]"):
        load_minari("bad-v0", root=tmp_path)
    p = _write_minari_by_hand(tmp_path, "bad2-v0", [3], [True])
    with h5py.File(p, "a") as f:
        del f["episode_0/observations"]
        f["episode_0/observations"] = np.zeros((3, 3))  # T instead of T + 1
    with pytest.raises(UserError, match="length mismatch: observations 3 \\(want T\\+1\\)"):
        load_minari("bad2-v0", root=tmp_path)


def test_minari_real_datacollector(tmp_path, monkeypatch):
    """minari's own DataCollector writes a real dataset; our reader must agree with minari's."""
    import gymnasium as gym
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    env = minari.DataCollector(gym.make("Pendulum-v1", max_episode_steps=15))
    rng = np.random.default_rng(0)
    for ep in range(3):
        env.reset(seed=ep)
        done = False
        while not done:
            _, _, te, tr, _ = env.step(rng.uniform(-2, 2, (1,)).astype(np.float32))
            done = te or tr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env.create_dataset("mbrltest/pendulum/random-v0", ref_min_score=-1500.0, ref_max_score=-150.0, algorithm_name="random")
    env.close()
    ds = load("minari/mbrltest/pendulum/random-v0")
    ref = minari.load_dataset("mbrltest/pendulum/random-v0")
    eps = list(ref.iterate_episodes())
    assert len(ds) == sum(len(e.rewards) for e in eps) == 45
    np.testing.assert_allclose(ds.obs, np.concatenate([e.observations[:-1] for e in eps]))
    np.testing.assert_allclose(ds.next_obs, np.concatenate([e.observations[1:] for e in eps]))
    np.testing.assert_allclose(ds.reward, np.concatenate([e.rewards for e in eps]))
    np.testing.assert_array_equal(np.flatnonzero(ds.truncated), [14, 29, 44])
    # raw actions are in [-2, 2]; the agent sees them rescaled to [-1, 1]
    np.testing.assert_allclose(ds.scaled_actions(), np.concatenate([e.actions for e in eps]) / 2.0, atol=1e-6)
    assert ds.ref_scores == (-1500.0, -150.0)
    assert ds.normalized_score(-150.0) == pytest.approx(100.0)
    assert ds.eval_env == "gym/Pendulum-v1"
    np.testing.assert_allclose(ds.episode_returns(), [e.rewards.sum() for e in eps], rtol=1e-5)
