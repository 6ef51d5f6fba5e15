"""Tests of the `envs` package: suites, wrappers, autoreset, name errors, Atari protocol, scores."""
from __future__ import annotations

import ctypes.util
import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402

from mbrl import envs  # noqa: E402
from mbrl.envs.wrappers import RescaleAction  # noqa: E402
from mbrl.errors import UserError


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
    assert issubclass(UserError, ValueError)


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
    with pytest.raises(UserError) as err:
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
    assert not trunc.any() and not info.get("_final_obs", np.zeros(2, bool)).any()
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


# ----------------------------------------------------------------------------------------------- dmc
def test_dmc_proprio_shapes_and_episode_length():
    env = envs.make("dmc/cartpole-swingup", seed=0, num_envs=1)
    assert env.single_observation_space.shape == (5,)  # position (3) + velocity (2), flattened
    space = env.single_action_space
    assert space.shape == (1,) and space.dtype == np.float32 and space.low[0] == -1 and space.high[0] == 1
    obs, _ = env.reset()
    assert obs.shape == (1, 5) and obs.dtype == np.float32
    steps = 0
    while True:
        obs, reward, term, trunc, info = env.step(env.action_space.sample())
        steps += 1
        assert obs.dtype == np.float32 and 0.0 <= reward[0] <= 2.0
        if term[0] or trunc[0]:
            break
    assert steps == 500 and trunc[0] and not term[0]  # 1000 env steps at action repeat 2
    assert env.envs[0].unwrapped.physics.data.time == pytest.approx(0.0)  # autoreset in the same step
    single = envs.make_single("dmc/cartpole-swingup", seed=0)
    single.reset()
    for t in range(500):
        *_, term, trunc, _ = single.step(single.action_space.sample())
        assert trunc == (t == 499) and not term
    assert single.unwrapped.physics.data.time == pytest.approx(10.0)  # 1000 steps of 0.01 s


def test_dmc_action_repeat_sums_rewards():
    rep = envs.make_single("dmc/cartpole-swingup", seed=5, action_repeat=3)
    one = envs.make_single("dmc/cartpole-swingup", seed=5, action_repeat=1)
    o_rep, _ = rep.reset()
    o_one, _ = one.reset()
    np.testing.assert_array_equal(o_rep, o_one)
    rng = np.random.default_rng(0)
    for _ in range(10):
        action = rng.uniform(-1, 1, 1).astype(np.float32)
        o_rep, r_rep, *_ = rep.step(action)
        total = 0.0
        for _ in range(3):
            o_one, r, *_ = one.step(action)
            total += r
        assert r_rep == pytest.approx(total, abs=1e-9)
        np.testing.assert_allclose(o_rep, o_one)
    assert rep.unwrapped._env.physics.data.time == pytest.approx(one.unwrapped._env.physics.data.time)
    assert envs.make_single("dmc/cartpole-swingup", action_repeat=4).unwrapped.max_steps == 250


def test_dmc_seeding_and_names():
    a, b, c = (envs.make_single("dmc/point_mass-easy", seed=s) for s in (1, 1, 2))
    oa, ob, oc = a.reset()[0], b.reset()[0], c.reset()[0]
    np.testing.assert_array_equal(oa, ob)
    assert not np.allclose(oa, oc)
    assert envs.make_single("dmc/ball_in_cup-catch").observation_space.shape == (8,)


@needs_egl
def test_dmc_pixels():
    env = envs.make("dmc/cartpole-swingup", seed=0, num_envs=1, pixels=True)
    assert env.single_observation_space.shape == (3, 64, 64)
    assert env.single_observation_space.dtype == np.uint8
    obs, _ = env.reset()
    assert obs.shape == (1, 3, 64, 64) and obs.dtype == np.uint8
    assert obs.std() > 10  # a real rendering, not a blank frame
    for _ in range(3):
        nxt, *_ = env.step(np.ones((1, 1), np.float32))
    assert nxt.shape == (1, 3, 64, 64) and np.abs(nxt.astype(int) - obs).sum() > 0  # the cart moved
    small = envs.make_single("dmc/quadruped-walk", pixels=True, size=32)
    assert small.unwrapped.camera == 2
    assert small.reset()[0].shape == (3, 32, 32)


@needs_egl
@pytest.mark.timeout(180)
def test_async_pixels_after_rendering_in_parent():
    # a forked child of a process that already holds an EGL context hangs; make uses forkserver
    sync = envs.make("dmc/cartpole-swingup", seed=0, num_envs=2, pixels=True)
    ref, _ = sync.reset()
    env = envs.make("dmc/cartpole-swingup", seed=0, num_envs=2, pixels=True, vectorization="async")
    try:
        obs, _ = env.reset()
        np.testing.assert_array_equal(obs, ref)
        action = np.full((2, 1), 0.5, np.float32)
        np.testing.assert_array_equal(env.step(action)[0], sync.step(action)[0])
    finally:
        env.close()


@needs_egl
def test_gym_mujoco_pixels():
    env = envs.make("gym/InvertedPendulum-v5", seed=0, pixels=True, size=48)
    assert env.single_observation_space.shape == (3, 48, 48)
    obs, _ = env.reset()
    assert obs.shape == (1, 3, 48, 48) and obs.dtype == np.uint8 and obs.std() > 5


# --------------------------------------------------------------------------------------------- atari
def test_atari_names():
    from mbrl.envs.atari import game_name

    assert game_name("pong") == game_name("Pong") == "Pong"
    assert game_name("ms_pacman") == game_name("MsPacman") == "MsPacman"
    from mbrl.envs.scores import ATARI100K_GAMES

    assert all(game_name(g) == g for g in ATARI100K_GAMES)


def test_atari_shapes_and_protocol():
    env = envs.make("atari/pong", seed=0, num_envs=2)
    assert env.single_observation_space.shape == (3, 64, 64)
    assert env.single_observation_space.dtype == np.uint8
    assert isinstance(env.single_action_space, gym.spaces.Discrete) and env.single_action_space.n == 6  # minimal
    obs, info = env.reset()
    assert obs.shape == (2, 3, 64, 64) and obs.dtype == np.uint8
    inner = env.envs[0].unwrapped
    assert inner.ale.getFloat("repeat_action_probability") == 0.0
    assert inner.max_steps == 27_000 and inner.ale.getInt("max_num_frames_per_episode") == 108_000
    frames = inner.ale.getEpisodeFrameNumber()
    assert 1 <= frames <= 30  # no-op start
    obs, reward, term, trunc, info = env.step(np.array([0, 1]))
    assert inner.ale.getEpisodeFrameNumber() == frames + 4  # frame skip 4
    assert obs.shape == (2, 3, 64, 64) and obs.dtype == np.uint8 and "life_loss" in info
    gray = envs.make("atari/pong", grayscale=True)
    assert gray.single_observation_space.shape == (1, 64, 64) and gray.reset()[0].shape == (1, 1, 64, 64)


def test_atari_max_pool_of_last_two_frames():
    import cv2

    env = envs.make_single("atari/breakout", seed=0)
    inner = env.unwrapped
    env.reset()
    for _ in range(20):  # get the ball moving, so consecutive frames differ
        env.step(1)
    state = inner.ale.cloneState()
    obs, *_ = env.step(3)
    inner.ale.restoreState(state)
    action = inner._action_set[3]
    frames = []
    for _ in range(4):
        inner.ale.act(action)
        frames.append(inner.ale.getScreenRGB())
    assert not np.array_equal(frames[2], frames[3])
    pooled = np.maximum(frames[2], frames[3])
    expected = cv2.resize(pooled, (64, 64), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
    np.testing.assert_array_equal(obs, expected)
    last_only = cv2.resize(frames[3], (64, 64), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
    assert not np.array_equal(obs, last_only)


def test_atari_noop_starts_vary_start_state():
    env = envs.make_single("atari/breakout", seed=0)
    starts, rams = set(), set()
    for seed in range(8):
        env.reset(seed=seed)
        starts.add(env.unwrapped.ale.getEpisodeFrameNumber())
        rams.add(env.unwrapped.ale.getRAM().tobytes())
    assert len(starts) >= 4 and len(rams) >= 4 and all(1 <= s <= 30 for s in starts)
    no_noop = envs.make_single("atari/breakout", seed=0, noop_max=0)
    no_noop.reset()
    assert no_noop.unwrapped.ale.getEpisodeFrameNumber() == 0


def test_atari_deterministic_without_sticky_actions():
    actions = np.random.default_rng(0).integers(0, 4, 150)
    a, b = envs.make_single("atari/breakout", seed=7), envs.make_single("atari/breakout", seed=7)
    a.reset(), b.reset()
    for act in actions:
        oa, ra, *_ = a.step(act)
        ob, rb, *_ = b.step(act)
        np.testing.assert_array_equal(oa, ob)
        assert ra == rb
    # same emulator state, different ALE random streams: with sticky actions these would diverge
    c, d = envs.make_single("atari/breakout", seed=1), envs.make_single("atari/breakout", seed=2)
    c.reset(), d.reset()
    d.unwrapped.ale.restoreState(c.unwrapped.ale.cloneState())
    for act in actions:
        oc, *_ = c.step(act)
        od, *_ = d.step(act)
        np.testing.assert_array_equal(oc, od)


def test_atari_life_loss_signal():
    env = envs.make("atari/breakout", seed=0, num_envs=1)
    env.reset()
    seen = None
    for t in range(2000):
        obs, reward, term, trunc, info = env.step(env.action_space.sample())
        if info["life_loss"][0]:
            seen = (t, int(info["lives"][0]), bool(term[0]))
            break
    assert seen is not None and seen[1] == 4 and not seen[2]  # 5 -> 4 lives, the episode goes on
    # life_loss_terminal: terminated at the life loss, the game (not a fresh one) goes on after reset
    env = envs.make_single("atari/breakout", seed=0, life_loss_terminal=True)
    env.reset()
    for t in range(2000):
        obs, reward, term, trunc, info = env.step(env.action_space.sample())
        if term:
            break
    assert term and info["life_loss"] and info["lives"] == 4
    _, info = env.reset()
    assert info["lives"] == 4


def test_atari_game_over_and_autoreset():
    env = envs.make("atari/breakout", seed=0, num_envs=1, noop_max=0)
    env.reset()
    for t in range(5000):
        obs, reward, term, trunc, info = env.step(env.action_space.sample())
        if term[0]:
            break
    assert term[0] and info["_final_obs"][0] and int(info["final_info"]["lives"][0]) == 0
    assert env.envs[0].unwrapped.ale.lives() == 5  # reset to a fresh game in the same step


# -------------------------------------------------------------------------------------------- scores
def test_scores():
    from mbrl.envs import scores

    assert len(scores.ATARI100K_GAMES) == 26 and scores.ATARI100K_STEPS == 100_000
    assert set(scores.ATARI_RANDOM_SCORES) == set(scores.ATARI100K_GAMES) == set(scores.ATARI_HUMAN_SCORES)
    for game in scores.ATARI100K_GAMES:
        assert scores.human_normalized_score(game, scores.ATARI_RANDOM_SCORES[game]) == pytest.approx(0.0)
        assert scores.human_normalized_score(game, scores.ATARI_HUMAN_SCORES[game]) == pytest.approx(1.0)
    assert scores.human_normalized_score("pong", 14.6) == pytest.approx(1.0)
    assert scores.human_normalized_score("atari/ms_pacman", 307.3) == pytest.approx(0.0)
    assert scores.human_normalized_score("Pong", -3.05) == pytest.approx(0.5)
    with pytest.raises(UserError, match="Alien"):
        scores.human_normalized_score("Tetris", 1.0)
