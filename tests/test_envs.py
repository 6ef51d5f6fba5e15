"""Tests of the `envs` package: suites, wrappers, autoreset, name errors, Atari protocol, scores."""
from __future__ import annotations

import ctypes.util
import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402

import envs  # noqa: E402
from envs.wrappers import RescaleAction  # noqa: E402


def _egl_available() -> bool:
    return ctypes.util.find_library("EGL") is not None


needs_egl = pytest.mark.skipif(not _egl_available(), reason="libEGL not installed (apt-get install libegl1 libgl1)")


def _rollout(env, steps):
    obs, _ = env.reset()
    out = [obs]
    for _ in range(steps):
        obs, reward, term, trunc, info = env.step(env.action_space.sample())
        out.append(obs)
    return out


# --------------------------------------------------------------------------------------------- names
def test_parse_and_suites():
    assert envs.parse("dmc/walker-walk") == ("dmc", "walker-walk")
    assert envs.parse("gym/ALE/Pong-v5") == ("gym", "ALE/Pong-v5")
    assert set(envs.SUITES) == {"gym", "dmc", "atari", "toy"}
    assert envs.suite_defaults("dmc")["action_repeat"] == 2
    assert envs.suite_defaults("atari")["steps"] == 100_000
    assert issubclass(envs.EnvNameError, ValueError)


@pytest.mark.parametrize("name, expected", [
    ("foo/bar", "valid suites: gym, dmc, atari, toy"),
    ("Pendulum-v1", "valid suites: gym, dmc, atari, toy"),
    ("gym/Hoper-v5", "Hopper-v5"),
    ("toy/nope", "point, point-pixels, chain"),
    ("dmc/walker-fly", "walker-walk"),
    ("dmc/nodomain-run", "cheetah-run"),
    ("dmc/walker", "walker-walk"),
    ("atari/pongg", "Pong"),
])
def test_bad_names_list_valid_ones(name, expected):
    with pytest.raises(envs.EnvNameError) as err:
        envs.make(name)
    msg = str(err.value)
    assert "\n" not in msg and expected in msg


# ----------------------------------------------------------------------------------------------- gym
@pytest.mark.parametrize("name, obs_shape, act", [
    ("gym/Pendulum-v1", (3,), (1,)),
    ("gym/InvertedPendulum-v5", (4,), (1,)),
    ("gym/CartPole-v1", (4,), 2),
    ("gym/Hopper-v5", (11,), (3,)),
])
def test_gym_shapes_dtypes(name, obs_shape, act):
    env = envs.make(name, seed=0, num_envs=2)
    assert isinstance(env, gym.vector.VectorEnv)
    assert env.single_observation_space.shape == obs_shape
    assert env.single_observation_space.dtype == np.float32
    if isinstance(act, int):
        assert isinstance(env.single_action_space, gym.spaces.Discrete) and env.single_action_space.n == act
    else:
        space = env.single_action_space
        assert space.shape == act and space.dtype == np.float32
        assert np.all(space.low == -1) and np.all(space.high == 1)
    obs, _ = env.reset()
    assert obs.shape == (2, *obs_shape) and obs.dtype == np.float32
    obs, reward, term, trunc, _ = env.step(env.action_space.sample())
    assert obs.shape == (2, *obs_shape) and obs.dtype == np.float32
    assert reward.shape == (2,) and term.dtype == bool and trunc.dtype == bool
    env.close()


def test_action_rescaling_bounds():
    inner = gym.make("Pendulum-v1")  # torque in [-2, 2]
    env = RescaleAction(inner)
    assert env.action_space.dtype == np.float32
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    np.testing.assert_allclose(env.action(np.array([-1.0])), [-2.0])
    np.testing.assert_allclose(env.action(np.array([1.0])), [2.0])
    np.testing.assert_allclose(env.action(np.array([0.5])), [1.0])
    np.testing.assert_allclose(env.action(np.array([7.0])), [2.0])  # clipped to the bound
    # asymmetric bounds map -1 -> low and +1 -> high
    box = gym.spaces.Box(np.array([0.0, -3.0]), np.array([1.0, 5.0]), dtype=np.float64)
    toy = gym.make("Pendulum-v1")
    toy.action_space = box
    wrapped = RescaleAction(toy)
    np.testing.assert_allclose(wrapped.action(np.array([-1.0, -1.0])), [0.0, -3.0])
    np.testing.assert_allclose(wrapped.action(np.array([1.0, 1.0])), [1.0, 5.0])
    np.testing.assert_allclose(wrapped.action(np.array([0.0, 0.0])), [0.5, 1.0])


def test_same_seed_same_trajectory_and_per_env_seeds():
    a = envs.make("gym/Pendulum-v1", seed=3, num_envs=2)
    b = envs.make("gym/Pendulum-v1", seed=3, num_envs=2)
    oa, ob = a.reset()[0], b.reset()[0]
    np.testing.assert_array_equal(oa, ob)
    assert not np.allclose(oa[0], oa[1])  # env i seeded with seed + i
    c = envs.make("gym/Pendulum-v1", seed=4, num_envs=1)
    np.testing.assert_array_equal(c.reset()[0][0], oa[1])


# ----------------------------------------------------------------------------------------------- toy
@pytest.mark.parametrize("name, kw, shape, dtype", [
    ("toy/point", {}, (4,), np.float32),
    ("toy/point-pixels", {"size": 16}, (3, 16, 16), np.uint8),
    ("toy/point-pixels", {}, (3, 64, 64), np.uint8),
    ("toy/chain", {}, (10,), np.float32),
])
def test_toy_shapes(name, kw, shape, dtype):
    env = envs.make(name, seed=0, num_envs=3, **kw)
    assert env.single_observation_space.shape == shape
    obs = _rollout(env, 5)
    assert all(o.shape == (3, *shape) and o.dtype == dtype for o in obs)
    if dtype == np.uint8:
        assert obs[0].max() == 255 and obs[0].min() == 0


def test_toy_random_far_below_good_policy():
    env = envs.make_single("toy/point", seed=0)
    inner = env.unwrapped
    rand, good = [], []
    for ep in range(20):
        for policy, out in ((lambda: env.action_space.sample(), rand),
                            (lambda: np.clip((inner.goal - inner.pos) / inner.speed, -1, 1), good)):
            env.reset(seed=ep)
            total, done = 0.0, False
            while not done:
                _, r, term, trunc, _ = env.step(policy())
                total += r
                done = term or trunc
            out.append(total)
    assert np.mean(good) > np.mean(rand) + 30


# ------------------------------------------------------------------------------------------ autoreset
def test_same_step_autoreset_final_obs():
    env = envs.make("toy/chain", seed=0, num_envs=2)
    obs, _ = env.reset()
    right = np.full(2, 2)
    for t in range(30):
        obs, reward, term, trunc, info = env.step(right)
    # step 30 ends both episodes: obs is the first obs of the next episode, final_obs the last one
    assert trunc.all() and not term.any()
    assert info["_final_obs"].all()
    np.testing.assert_array_equal(obs[:, 0], [1.0, 1.0])  # reset obs: at the left end
    final = np.stack(info["final_obs"])
    np.testing.assert_array_equal(final[:, -1], [1.0, 1.0])  # last obs: at the right end
    np.testing.assert_allclose(reward, [1.0, 1.0])
    obs, reward, term, trunc, info = env.step(right)
    assert not trunc.any() and "_final_obs" not in info or not info["_final_obs"].any()
    np.testing.assert_array_equal(obs[:, 1], [1.0, 1.0])


def test_terminated_autoreset_gym():
    env = envs.make("gym/CartPole-v1", seed=0, num_envs=1)
    env.reset()
    for _ in range(500):
        obs, _, term, trunc, info = env.step(np.zeros(1, dtype=np.int64))  # always push left: falls fast
        if term[0]:
            break
    assert term[0] and info["_final_obs"][0]
    assert abs(info["final_obs"][0][2]) > 0.2  # the pole angle at failure, not the reset obs
    assert abs(obs[0][2]) < 0.06  # reset obs


def test_async_vectorization():
    env = envs.make("toy/point", seed=0, num_envs=2, vectorization="async")
    try:
        obs = _rollout(env, 60)
        assert obs[-1].shape == (2, 4)
    finally:
        env.close()
    sync = envs.make("toy/point", seed=0, num_envs=2)
    other = envs.make("toy/point", seed=0, num_envs=2, vectorization="async")
    try:
        np.testing.assert_array_equal(sync.reset()[0], other.reset()[0])
    finally:
        other.close()
