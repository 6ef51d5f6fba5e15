"""TerminalValue: TD(λ) targets over stored episodes, and a fit that recovers known values."""
import numpy as np
import pytest
import torch

from mbrl.data.batch import Batch
from mbrl.learners.value import TerminalValue, lambda_targets, successor_mask

pytestmark = pytest.mark.usefixtures("one_thread")


def chain_episodes(lengths, start=0.0):
    """Episodes on a line: obs = steps left before termination (k, k-1, ..., 1 -> terminal), reward 1."""
    obs, nxt, term, trunc = [], [], [], []
    for k in lengths:
        for t in range(k):
            obs.append([float(k - t)])
            nxt.append([float(k - t - 1)])
            term.append(t == k - 1)
            trunc.append(False)
    n = len(obs)
    return Batch(obs=torch.tensor(obs), next_obs=torch.tensor(nxt), action=torch.zeros(n, 1), reward=torch.ones(n),
                 terminated=torch.tensor(term, dtype=torch.float32), truncated=torch.tensor(trunc, dtype=torch.float32))


def test_successor_mask_follows_episodes():
    b = chain_episodes([3, 2])
    # rows: 3,2,1 | 2,1 ; the last row of each episode (terminated) has no successor
    assert successor_mask(b).tolist() == [True, True, False, True, False]
    # a row whose next_obs is not the next row's obs (another stream, a cut) has no successor either
    b.next_obs[0, 0] = 7.0
    assert successor_mask(b).tolist() == [False, True, False, True, False]


def test_lambda_targets_hand_computed():
    g, lam = 0.9, 0.5
    r = np.array([1.0, 2.0, 3.0])
    term = np.array([0.0, 0.0, 1.0])
    succ = np.array([True, True, False])
    v_next = np.array([10.0, 20.0, 30.0])
    out = lambda_targets(r, term, succ, v_next, g, lam)
    g2 = 3.0  # terminal: no bootstrap
    g1 = 2.0 + g * ((1 - lam) * 20.0 + lam * g2)
    g0 = 1.0 + g * ((1 - lam) * 10.0 + lam * g1)
    assert np.allclose(out, [g0, g1, g2])
    # a truncated end (no successor, not terminated) bootstraps fully from V(s')
    out = lambda_targets(r, np.zeros(3), succ, v_next, g, lam)
    assert np.isclose(out[2], 3.0 + g * 30.0)
    # λ = 1: Monte Carlo return inside the episode
    out = lambda_targets(r, term, succ, v_next, g, 1.0)
    assert np.isclose(out[0], 1.0 + g * 2.0 + g * g * 3.0)


def test_fit_recovers_steps_to_termination():
    gamma = 0.9
    data = chain_episodes([5, 10, 15, 20])
    v = TerminalValue(1, hidden=64, layers=2, gamma=gamma, updates=1500, batch_size=64, refresh=50, seed=0)
    v.fit(data)
    k = torch.tensor([[1.0], [5.0], [10.0], [20.0]])
    want = (1 - gamma ** k.squeeze(-1)) / (1 - gamma)  # k reward-1 steps then termination
    got = v(k).detach()
    assert torch.allclose(got, want, atol=0.35), (got, want)


def test_bad_gamma():
    with pytest.raises(ValueError, match="gamma"):
        TerminalValue(1, gamma=1.0)
