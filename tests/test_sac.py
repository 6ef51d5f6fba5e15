"""SAC learns: gym/Pendulum-v1 above -400 mean eval return within 15k env steps (random ≈ -1200)."""
import numpy as np
import torch

from conftest import run_until

from mbrl import envs
from mbrl.algos.base import LoopConfig
from mbrl.algos.sac import SACAlgorithm
from mbrl.data import ReplayBuffer
from mbrl.learners.sac import SAC


def test_sac_update_shapes_and_alpha_tuning():
    torch.manual_seed(0)
    sac = SAC(obs_dim=3, action_dim=2, hidden=32)
    from mbrl.data.batch import Batch

    b = Batch(obs=torch.randn(64, 3), action=torch.rand(64, 2) * 2 - 1, reward=torch.randn(64),
              next_obs=torch.randn(64, 3), terminated=torch.zeros(64, dtype=torch.bool))
    a0 = sac.alpha.item()
    for _ in range(20):
        m = sac.update(b)
    assert set(m) >= {"sac/critic_loss", "sac/actor_loss", "sac/alpha", "sac/entropy"}
    assert sac.alpha.item() != a0
    act = sac.act(torch.randn(5, 3), explore=True)
    assert act.shape == (5, 2) and act.abs().max() <= 1
    det1, det2 = sac.act(torch.ones(1, 3), explore=False), sac.act(torch.ones(1, 3), explore=False)
    assert torch.equal(det1, det2)


def test_sac_learns_pendulum():
    torch.manual_seed(0)
    env = envs.make("gym/Pendulum-v1", seed=0)
    eval_env = envs.make("gym/Pendulum-v1", seed=1000, num_envs=5)
    buffer = ReplayBuffer.for_env(env, capacity=20_000, seed=0)
    learner = SAC(obs_dim=3, action_dim=1)
    loop = LoopConfig(steps=15_000, prefill=1_000, train_ratio=1.0, eval_every=1_000, eval_episodes=5, progress=False, tensorboard=False)
    algo = SACAlgorithm(env, eval_env, buffer, learner, loop, batch_size=256)
    evals = run_until(algo, -400.0)  # random: about -1200; stops at the first evaluation above -400
    returns = [(s, round(m["eval/return"], 1)) for s, m in evals]
    print("eval returns", returns)
    assert max(r for _, r in returns) > -400, returns
