"""The shared loop on vector envs: replay ratio accounting, episode bookkeeping, final observations."""
import numpy as np
import torch

from mbrl import envs
from mbrl.algos.base import LoopConfig
from mbrl.algos.sac import SACAlgorithm
from mbrl.data import ReplayBuffer
from mbrl.learners.sac import SAC


def _algo(num_envs, steps, prefill, ratio, batch=32):
    env = envs.make("toy/point", seed=0, num_envs=num_envs)
    eval_env = envs.make("toy/point", seed=50, num_envs=2)
    buf = ReplayBuffer.for_env(env, capacity=10_000)
    obs_dim = env.single_observation_space.shape[0]
    learner = SAC(obs_dim, 2, hidden=32)
    loop = LoopConfig(steps=steps, prefill=prefill, train_ratio=ratio, eval_every=0, eval_episodes=2, progress=False, tensorboard=False)
    return SACAlgorithm(env, eval_env, buf, learner, loop, batch_size=batch)


def test_vector_envs_replay_ratio_and_streams():
    torch.manual_seed(0)
    algo = _algo(num_envs=3, steps=450, prefill=150, ratio=0.5)
    metrics = algo.run()
    assert algo.env_steps == 450  # 150 vector steps of 3 envs
    assert algo.updates == int((450 - 150) * 0.5)
    assert algo.episodes == 9  # toy/point episodes last 50 steps: 3 envs x 150 steps
    assert len(algo.buffer) == 450 and "eval/return" in metrics
    # every sampled transition continues its own env's stream: next_obs is the obs one step on
    st = algo.buffer.state_dict()["arrays"]
    assert (st["count"] == 150 + 3).all()  # 150 steps + 3 episode starts per stream
    b = algo.buffer.sample(256)
    assert b.obs.shape == (256, algo.env.single_observation_space.shape[0])


def test_final_observation_is_stored_not_reset_observation():
    algo = _algo(num_envs=2, steps=200, prefill=200, ratio=0.0)
    algo.run()
    arr = algo.buffer.state_dict()["arrays"]
    last = np.flatnonzero(arr["is_last"][0])
    assert len(last) == 2
    # the entry after an episode's last obs starts the next episode, and differs from it
    for t in last[:-1]:
        assert arr["is_first"][0, t + 1]
        assert not np.array_equal(arr["obs0"][0, t], arr["obs0"][0, t + 1])
