"""DWM (mbrl/algos/dwm.py): the segment diffusion model learns known dynamics and follows its RTG condition,
the Diffusion-MVE target is the one of the paper, `algo=dwm` runs end to end from the CLI (TD3+BC, IQL, the
one-step ensemble baseline), and bad input is refused with one line.

Measured on one CPU thread (the figures the thresholds below are set against):
- test_segment_model_learns_linear_dynamics: after 400 updates the generated states' MSE (standardised units)
  is 0.0055 (rewards 0.054); the untrained model's is 1.31 (1.20), the trained model given shuffled actions
  0.130 (0.225). Thresholds: < 0.02, < untrained / 30, < shuffled / 5 (rewards: < untrained / 10, < shuffled / 2).
- test_guidance_follows_the_rtg: data whose future rewards are 0.58 higher above the 90th RTG percentile than
  below the 10th; generated future rewards at those two RTGs differ by 0.27 with guidance 1, 0.54 with
  guidance 2, and exactly 0 with guidance 0. Thresholds: > 0.15 at 1, > 1.5x that at 2, == 0 at 0.
- test_terminations_are_padded_and_learned: after 150 updates 99.9% of the generated done flags are right.
The whole file: 50 s on one thread (the three tests above 11, 10 and 4 s, the three CLI runs 4-5 s each).
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mbrl.algos.dwm import SegmentModel, discounted_rtg, mve_target
from mbrl.config import compose
from mbrl.data.batch import Batch
from mbrl.data.offline import OfflineDataset
from mbrl.errors import UserError
from mbrl.learners.td3bc import TD3BC
from mbrl.train import build

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1")
TINY = ["learner.hidden=32", "algo.batch_size=32", "algo.dwm.fit_steps=30", "algo.dwm.fit_batch=32", "algo.dwm.channels=[16,32]",
        "algo.dwm.emb=32", "algo.dwm.segment=4", "algo.dwm.horizon=3"]
COMMON = ["progress=false", "tensorboard=false", "threads=1"]


def _dataset(obs, act, rew, nxt, trunc, term=None, name="synthetic") -> OfflineDataset:
    f = lambda x, dt=np.float32: np.asarray(x, dt)  # noqa: E731
    n = len(rew)
    return OfflineDataset(f(obs), f(act), f(rew), f(nxt), np.zeros(n, bool) if term is None else f(term, bool), f(trunc, bool), name=name)


def linear_data(episodes: int = 200, T: int = 20, seed: int = 0) -> OfflineDataset:
    """s' = s + a, r = -|s|_1, one action per episode (so (s_t, a_t) determine the whole future)."""
    rng = np.random.default_rng(seed)
    obs, act, rew, nxt, trunc = [], [], [], [], []
    for _ in range(episodes):
        s, a = rng.uniform(-1, 1, 2), rng.uniform(-1, 1, 2) * 0.3
        for t in range(T):
            obs.append(s), act.append(a), rew.append(-np.abs(s).sum()), nxt.append(s + a), trunc.append(t == T - 1)
            s = s + a
    return _dataset(obs, act, rew, nxt, trunc, name="linear")


def random_walk(episodes: int = 300, T: int = 20, seed: int = 0) -> OfflineDataset:
    """i.i.d. actions a ~ U(-1, 1), s' = s + a / 2, r = a: the future rewards are unknown given (s_t, a_t)
    but correlated with the return-to-go."""
    rng = np.random.default_rng(seed)
    obs, act, rew, nxt, trunc = [], [], [], [], []
    for _ in range(episodes):
        s = rng.uniform(-1, 1, 1)
        for t in range(T):
            a = rng.uniform(-1, 1, 1)
            obs.append(s), act.append(a), rew.append(float(a[0])), nxt.append(s + 0.5 * a), trunc.append(t == T - 1)
            s = s + 0.5 * a
    return _dataset(obs, act, rew, nxt, trunc, name="walk")


def _model(ds, length=4, **kw) -> SegmentModel:
    torch.manual_seed(0)
    return SegmentModel(ds, length, 0.99, lr=2e-3, batch_size=64, channels=(16, 32), emb=32, seed=0, **kw)


def test_segment_model_learns_linear_dynamics():
    """Generated segments track the true rollout far better than the untrained model and than the trained
    model given the wrong (shuffled) actions: a model that ignores a_t, s_t or the time step cannot."""
    ds = linear_data()
    sm = _model(ds)
    seg = sm.segments(sm.starts[torch.randperm(len(sm.starts), generator=torch.Generator().manual_seed(0))[:512]])

    def errors(action):
        torch.manual_seed(1)
        r, s, d = sm.generate(seg["obs"], action, seg["rtg"], guidance=1.0)
        assert r.shape == (512, 4) and s.shape == (512, 4, 2) and not d.any()
        return (((s - seg["next_obs"]) / sm.obs_std) ** 2).mean().item(), (((r - seg["reward"]) / sm.rew_std) ** 2).mean().item()

    untrained = errors(seg["action"])
    for _ in range(400):
        sm.fit_step()
    trained = errors(seg["action"])
    shuffled = errors(seg["action"][torch.randperm(512, generator=torch.Generator().manual_seed(2))])
    print(f"state / reward MSE: trained {trained}, untrained {untrained}, shuffled actions {shuffled}")
    assert trained[0] < 0.02 and trained[0] < untrained[0] / 30 and trained[0] < shuffled[0] / 5, (trained, untrained, shuffled)
    assert trained[1] < untrained[1] / 10 and trained[1] < shuffled[1] / 2, (trained, untrained, shuffled)


def test_guidance_follows_the_rtg():
    """Classifier-free guidance: a high target RTG generates higher future rewards than a low one, more so at
    guidance 2 than 1; at guidance 0 (unconditional) the RTG has no effect at all."""
    ds = random_walk()
    sm = _model(ds)
    seg_all = sm.segments(sm.starts)
    lo, hi = torch.quantile(seg_all["rtg"], torch.tensor([0.1, 0.9])).tolist()
    future = seg_all["reward"][:, 1:].mean(1)
    data_gap = (future[seg_all["rtg"] >= hi].mean() - future[seg_all["rtg"] <= lo].mean()).item()
    assert data_gap > 0.4  # the data: RTG tells the future
    for _ in range(400):
        sm.fit_step()
    seg = sm.segments(sm.starts[:512])
    gap = {}
    for w in (0.0, 1.0, 2.0):
        noise = torch.randn(512, 4, sm.x_dim, generator=torch.Generator().manual_seed(3))
        r_hi = sm.generate(seg["obs"], seg["action"], hi, guidance=w, noise=noise)[0]
        r_lo = sm.generate(seg["obs"], seg["action"], lo, guidance=w, noise=noise)[0]
        gap[w] = (r_hi - r_lo)[:, 1:].mean().item()
        if w == 0.0:
            assert torch.equal(r_hi, r_lo)
    print(f"future-reward gap high - low RTG: data {data_gap:.3f}, generated {gap}")
    assert gap[1.0] > 0.15 and gap[2.0] > 1.5 * gap[1.0], (gap, data_gap)


def terminating(episodes: int = 200, T: int = 4, seed: int = 0) -> OfflineDataset:
    """obs (x, t / T), x' = x + a (one action per episode), reward 1 (an alive bonus), termination after T
    steps; then one 2-step episode that times out."""
    rng = np.random.default_rng(seed)
    obs, act, rew, nxt, term, trunc = [], [], [], [], [], []
    for _ in range(episodes):
        x, a = rng.uniform(-1, 1), rng.uniform(-1, 1) * 0.3
        for t in range(T):
            obs.append([x, t / T]), act.append([a]), rew.append(1.0), nxt.append([x + a, (t + 1) / T]), term.append(t == T - 1), trunc.append(False)
            x = x + a
    obs += [[0, 0], [0, 0.25]]
    act += [[0], [0]]
    rew += [1, 1]
    nxt += [[0, 0.25], [0, 0.5]]
    term += [False, False]
    trunc += [False, True]
    return _dataset(obs, act, rew, nxt, trunc, term, name="term")


def test_terminations_are_padded_and_learned():
    """Segments may run past a termination (padding: reward 0, the terminal state, done) but not past a
    timeout; the model gets a done channel and learns where episodes end (150 updates: 99.9% of the rows'
    flags right, the first done row right in 99.6% of segments; all-false would be 50%)."""
    ds = terminating()
    sm = _model(ds, length=3)
    assert sm.x_dim == 1 + 2 + 1 and len(sm.starts) == 800  # every step of the terminating episodes; none of the timed-out one
    seg = sm.segments(torch.arange(4))
    assert seg["reward"].tolist() == [[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 0, 0]]
    assert seg["done"].tolist() == [[False, False, False], [False, False, True], [False, True, True], [True, True, True]]
    assert seg["next_obs"][:, :, 1].tolist() == [[0.25, 0.5, 0.75], [0.5, 0.75, 1.0], [0.75, 1.0, 1.0], [1.0, 1.0, 1.0]]
    for _ in range(150):
        sm.fit_step()
    seg = sm.segments(sm.starts)
    d = sm.generate(seg["obs"], seg["action"], seg["rtg"], guidance=1.0)[2]
    assert (d == seg["done"]).float().mean() > 0.95 and (~seg["done"]).float().mean() < 0.6


def test_mve_target_by_hand():
    r = torch.tensor([[1.0, 2.0, 3.0]])
    v = torch.tensor([[10.0, 20.0, 30.0]])
    none = torch.zeros(1, 3, dtype=torch.bool)
    assert mve_target(r, none, v, 0.9).item() == pytest.approx(1 + 0.9 * 2 + 0.81 * 3 + 0.729 * 30)
    done1 = torch.tensor([[False, True, False]])  # the step into s_2 terminates: no reward or value after it
    assert mve_target(r, done1, v, 0.9).item() == pytest.approx(1 + 0.9 * 2)
    # lambda-return (paper eq. 6.15): G_3 = 30, G_2 = 3 + .9 * 30, G_1 = 2 + .9 (.5 * 20 + .5 G_2), G_0 = 1 + .9 (.5 * 10 + .5 G_1)
    g2 = 3 + 0.9 * 30
    g1 = 2 + 0.9 * (0.5 * 20 + 0.5 * g2)
    assert mve_target(r, none, v, 0.9, lam=0.5).item() == pytest.approx(1 + 0.9 * (0.5 * 10 + 0.5 * g1))
    # RTG labels: discounted to each recorded episode's end
    np.testing.assert_allclose(discounted_rtg(np.array([1.0, 1.0, 1.0, 2.0]), np.array([False, True, False, True]), 0.5), [1.5, 1.0, 2.0, 2.0])


def test_learner_takes_a_precomputed_target():
    """TD3+BC regresses its critics onto a batch's `target`; without one its target is r + γ(1-d) bootstrap(s')."""
    torch.manual_seed(0)
    lr = TD3BC(3, 2, hidden=16, policy_noise=0.0)
    b = Batch(obs=torch.randn(8, 3), action=torch.rand(8, 2) * 2 - 1, reward=torch.randn(8), next_obs=torch.randn(8, 3),
              terminated=torch.zeros(8, dtype=torch.bool))
    target = torch.full((8,), 5.0)
    q = lr.critic(lr.obs_norm(b.obs), b.action).detach()
    m = lr.update(Batch({**b, "target": target}))
    assert m["td3bc/critic_loss"] == pytest.approx((q - target).pow(2).mean(1).sum().item(), rel=1e-5)
    q = lr.critic(lr.obs_norm(b.obs), b.action).detach()
    with torch.no_grad():
        nobs = lr.obs_norm(b.next_obs)
        own = b.reward + lr.gamma * lr.critic_target(nobs, lr.actor_target(nobs)).min(0).values
    m = lr.update(b)
    assert m["td3bc/critic_loss"] == pytest.approx((q - own).pow(2).mean(1).sum().item(), rel=1e-5)


@pytest.fixture(scope="module")
def point_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "point-random.hdf5"
    res = subprocess.run([sys.executable, "-m", "mbrl.collect", "env=toy/point", "kind=random", "steps=2000", "ref_max=-5.1", "threads=1", f"out={out}"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return out


def test_train_step_target_is_the_expansion_of_the_generated_segment(point_data, tmp_path):
    """Inside algo=dwm: the learner's target is Σ_{h<H} γ^h r̂_h + γ^H min_i Q̄_i(ŝ_H, π̄(ŝ_H)) of the segment
    the model generated for the batch (target-policy noise off, so the value is exact)."""
    cfg = compose(["env=d4rl/point-random", f"dataset_path={point_data}", "algo=dwm", *TINY, "learner.policy_noise=0.0", *COMMON])
    algo = build(cfg, tmp_path)
    r = torch.tensor([[1.0, -2.0, 0.5]]).repeat(32, 1)
    s = torch.randn(32, 3, 4)
    algo.expand = lambda obs, action: (r, s, torch.zeros(32, 3, dtype=torch.bool))
    seen = {}
    update = algo.learner.update
    algo.learner.update = lambda batch: seen.setdefault("target", batch["target"].clone()) is not None and update(batch)
    ln = algo.learner
    with torch.no_grad():
        sH = ln.obs_norm(s[:, -1])
        q = ln.critic_target(sH, ln.actor_target(sH)).min(0).values
    algo.train_step()
    g = ln.gamma
    np.testing.assert_allclose(seen["target"].numpy(), (1.0 - 2.0 * g + 0.5 * g**2 + g**3 * q).numpy(), rtol=1e-5)


def _metric(run_dir: Path, key: str) -> list[float]:
    with open(run_dir / "metrics.csv") as f:
        return [float(r["value"]) for r in csv.DictReader(f) if r["key"] == key]


@pytest.mark.parametrize("extra", [[], ["learner=iql"], ["algo.dwm.model=ensemble", "algo.dwm.ensemble.hidden=32", "algo.dwm.ensemble.layers=2",
                                                          "algo.fit.max_updates=30"]], ids=["td3bc", "iql", "ensemble"])
def test_cli_end_to_end(point_data, tmp_path, extra):
    res = subprocess.run([sys.executable, "-m", "mbrl.train", "env=d4rl/point-random", f"dataset_path={point_data}", "algo=dwm", "steps=40",
                          "eval_every=20", "eval_episodes=2", "checkpoint_every=20", f"run_dir={tmp_path}", *TINY, *COMMON, *extra],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(_metric(tmp_path, "eval/normalized_score")) == 2
    assert len(_metric(tmp_path, "dwm/target")) >= 1 and np.isfinite(_metric(tmp_path, "dwm/target")).all()
    if not extra or extra[0] == "learner=iql":
        assert _metric(tmp_path, "dwm/fit_steps") == [30.0]
    assert (tmp_path / "checkpoints" / "latest.pt").exists()


@pytest.fixture(scope="module")
def chain_data(tmp_path_factory) -> Path:
    """A D4RL-format file of discrete actions (toy/chain's spaces)."""
    out = tmp_path_factory.mktemp("data") / "chain.hdf5"
    n = 100
    with h5py.File(out, "w") as f:
        f["observations"] = np.random.rand(n, 10).astype(np.float32)
        f["next_observations"] = np.random.rand(n, 10).astype(np.float32)
        f["actions"] = np.random.randint(0, 3, n)
        f["rewards"] = np.zeros(n, np.float32)
        f["terminals"] = np.zeros(n, bool)
        f["timeouts"] = np.arange(n) % 10 == 9
        f.attrs["env_name"] = "toy/chain"
    return out


@pytest.mark.parametrize("args, expected", [
    (["algo.dwm.horizon=0"], "algo.dwm.horizon=0; valid: an integer 1 <= horizon <= algo.dwm.segment = 4"),
    (["algo.dwm.horizon=5"], "algo.dwm.horizon=5; valid: an integer 1 <= horizon <= algo.dwm.segment = 4"),
    (["algo.dwm.model=unet"], "algo.dwm.model='unet'; valid: diffusion, ensemble"),
    (["learner=cql"], "learner=cql has no value-expansion hook; valid: td3bc, iql"),
    (["algo.dwm.guidance=-1.0"], "valid: 0 <= lam <= 1, guidance >= 0"),
    (["algo.dwm.edm.steps=0"], "steps=0; valid: an integer >= 1"),
    (["algo.dwm.segment=60"], "algo.dwm.segment=60 is longer than every episode"),
    (["algo.dwm.rtg_scale=0.0"], "algo.dwm.rtg_scale=0.0; valid: a number > 0"),
])
def test_refusals(point_data, args, expected):
    with pytest.raises(UserError) as e:
        build(compose(["env=d4rl/point-random", f"dataset_path={point_data}", "algo=dwm", *TINY, *COMMON, *args]))
    assert expected in str(e.value) and len(str(e.value).splitlines()) == 1, str(e.value)


def test_cli_refusals_are_one_line(point_data, chain_data):
    for args, expected in ((["env=d4rl/chain", f"dataset_path={chain_data}"], "need continuous actions"),
                           (["env=d4rl/point-random", f"dataset_path={point_data}", "algo.dwm.horizon=0"], "algo.dwm.horizon=0; valid")):
        res = subprocess.run([sys.executable, "-m", "mbrl.train", "algo=dwm", *args, *COMMON], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and expected in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr[-2000:]
