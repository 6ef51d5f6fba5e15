"""Unit tests of models/dists.py and models/rssm.py (DreamerV3 world model)."""
import gymnasium as gym
import numpy as np
import pytest
import torch

from mbrl.data.batch import Batch
from mbrl.models.dists import (BoundedNormal, OneHotCategorical, TruncatedNormal, TwoHot, categorical_kl, kl_free_bits,
                               symexp, symexp_bins, symlog, twohot, unimix_logits)
from mbrl.models.rssm import RSSM, SIZES, ConfigError, RSSMState

torch.set_num_threads(1)


def test_symlog_symexp_round_trip():
    x = torch.tensor([-1e6, -123.4, -1.0, -1e-3, 0.0, 1e-3, 0.5, 7.0, 1e6], dtype=torch.float64)
    assert torch.allclose(symexp(symlog(x)), x, rtol=1e-10, atol=1e-12)
    assert torch.allclose(symlog(symexp(x.clamp(-50, 50))), x.clamp(-50, 50), rtol=1e-10)
    assert symlog(torch.tensor(0.0)) == 0 and symlog(torch.tensor(np.e - 1)).item() == pytest.approx(1.0)


def test_twohot_round_trip_and_loss():
    bins = symexp_bins(255)
    assert bins[127] == 0 and torch.allclose(bins, -bins.flip(0))
    x = torch.tensor([-3000.0, -10.0, -0.3, 0.0, 0.01, 1.0, 2.5, 500.0])
    enc = twohot(x, bins)
    assert torch.allclose(enc.sum(-1), torch.ones(len(x)))
    assert ((enc > 0).sum(-1) <= 2).all()
    assert torch.allclose((enc * bins).sum(-1), x, rtol=1e-4, atol=1e-5)
    # out of range clamps to the end bins
    big = twohot(torch.tensor([1e12, -1e12]), bins)
    assert big[0, -1] == 1 and big[1, 0] == 1
    # a distribution with the two-hot probabilities has that mean, and minimal loss there
    d = TwoHot(torch.log(enc.clamp_min(1e-30)), bins)
    assert torch.allclose(d.mean(), x, rtol=1e-3, atol=1e-4)
    # zero logits predict exactly 0 (symmetric sum)
    assert TwoHot(torch.zeros(3, 255), bins).mean().abs().max() == 0
    # learning a target by gradient descent on the two-hot loss
    logits = torch.zeros(255, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        TwoHot(logits, bins).loss(torch.tensor(42.0)).backward()
        opt.step()
    assert TwoHot(logits, bins).mean().item() == pytest.approx(42.0, rel=0.02)


def test_kl_free_bits():
    p = torch.log_softmax(torch.randn(5, 32, 32), -1)
    assert torch.allclose(categorical_kl(p, p), torch.zeros(5, 32), atol=1e-6)
    q = torch.log_softmax(torch.randn(5, 32, 32), -1)
    kl = categorical_kl(p, q)
    assert (kl > 0).all()
    v = torch.tensor([0.2, 0.99, 1.0, 3.0], requires_grad=True)
    out = kl_free_bits(v, 1.0)
    assert out.tolist() == [1.0, 1.0, 1.0, 3.0]
    out.sum().backward()
    assert v.grad.tolist()[0] == 0 and v.grad.tolist()[-1] == 1  # no gradient below the free nats


def test_categorical_and_continuous_dists():
    torch.manual_seed(0)
    logits = unimix_logits(torch.tensor([[50.0, 0.0, 0.0, 0.0]]), 0.01)
    probs = logits.exp()
    assert probs.min().item() == pytest.approx(0.0025, rel=1e-3)  # 1% uniform mix over 4
    d = OneHotCategorical(torch.randn(1000, 4, requires_grad=True))
    s = d.sample()
    assert torch.equal(s.detach().sum(-1), torch.ones(1000)) and set(s.detach().unique().tolist()) <= {0.0, 1.0}
    s.sum().backward()  # straight-through: gradient reaches the logits
    bn = BoundedNormal(torch.zeros(4096, 2), torch.zeros(4096, 2))
    a = bn.rsample()
    assert a.min() >= -1 and a.max() <= 1
    tn = TruncatedNormal(torch.full((20000, 1), 0.8), torch.full((20000, 1), 0.5))
    x = tn.rsample()
    assert x.min() >= -1 and x.max() <= 1 and abs(x.mean().item() - 0.8) < 0.3
    assert torch.isfinite(tn.log_prob(x)).all() and torch.isfinite(tn.entropy()).all()


def _vec_model(**kw):
    return RSSM(gym.spaces.Box(-np.inf, np.inf, (5,), np.float32), gym.spaces.Box(-1, 1, (2,), np.float32), size="XS",
                deter=64, hidden=32, stoch=4, classes=4, blocks=4, **kw)


def _vec_batch(B=3, T=7):
    g = torch.Generator().manual_seed(0)
    first = torch.zeros(B, T, dtype=torch.bool)
    first[:, 0] = True
    first[1, 4] = True
    return Batch(obs=torch.randn(B, T, 5, generator=g), action=torch.rand(B, T, 2, generator=g) * 2 - 1,
                 reward=torch.randn(B, T, generator=g), terminated=torch.zeros(B, T, dtype=torch.bool), is_first=first)


def test_rssm_shapes_posterior_prior_and_is_first_reset():
    torch.manual_seed(0)
    m = _vec_model()
    b = _vec_batch()
    post = m.observe(b.obs, b.action, b.is_first)
    assert isinstance(post, RSSMState)
    assert post.deter.shape == (3, 7, 64) and post.stoch.shape == (3, 7, 16) and post.logits.shape == (3, 7, 16)
    assert m.features(post).shape == (3, 7, 64 + 16)
    # stoch is one-hot per categorical
    assert torch.equal(post.stoch.reshape(3, 7, 4, 4).sum(-1), torch.ones(3, 7, 4))
    prior = m.step(post[:, 3], b.action[:, 3])
    assert prior.deter.shape == (3, 64) and prior.stoch.shape == (3, 16)
    assert m.reward(prior).shape == (3,) and m.cont(prior).shape == (3,)
    # is_first resets: at row 1, t=4 the posterior equals that of a fresh start on the same obs
    fresh = m.observe(b.obs[:, 4:], b.action[:, 4:], torch.ones(3, 3, dtype=torch.bool))
    assert torch.allclose(post.deter[1, 4], fresh.deter[1, 0], atol=1e-6)
    assert torch.allclose(post.logits[1, 4], fresh.logits[1, 0], atol=1e-5)
    # ... and rows without a reset there carry their history
    assert not torch.allclose(post.logits[0, 4], fresh.logits[0, 0], atol=1e-3)
    assert not torch.allclose(post.deter[0, 4], fresh.deter[0, 0], atol=1e-3)
    # continuing with state + prev_action matches one long call (deter is deterministic given stoch)
    a = m.observe(b.obs[:, :4], b.action[:, :4], b.is_first[:, :4])
    torch.manual_seed(1)
    c = m.observe(b.obs[:, 4:], b.action[:, 4:], b.is_first[:, 4:], state=a[:, -1], prev_action=b.action[:, 3])
    # the first continued deter depends only on a[:, -1] and action 3
    expect = m.step(a[:, -1], b.action[:, 3]).deter
    assert torch.allclose(c.deter[0, 0], expect[0], atol=1e-5) and torch.allclose(c.deter[2, 0], expect[2], atol=1e-5)


def test_imagination_horizon_shapes_and_initial_predictions():
    m = _vec_model()
    start = m.initial(6)
    policy = lambda f: torch.tanh(f[:, :2])  # noqa: E731
    traj = m.imagine(start, policy, horizon=15)
    assert traj.features.shape == (16, 6, 80) and traj.actions.shape == (16, 6, 2)
    assert traj.rewards.shape == (15, 6) and traj.conts.shape == (15, 6)
    assert traj.states.deter.shape == (16, 6, 64)
    assert (traj.rewards == 0).all()  # zero-initialised two-hot reward head predicts exactly 0


def test_pixel_and_dict_observations():
    torch.manual_seed(0)
    space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (3, 64, 64), np.uint8), "vec": gym.spaces.Box(-1, 1, (3,), np.float32)})
    m = RSSM(space, gym.spaces.Discrete(4), size="XS", deter=64, hidden=32, depth=4, stoch=4, classes=4, blocks=2)
    B, T = 2, 3
    obs = {"image": torch.randint(0, 255, (B, T, 3, 64, 64), dtype=torch.uint8), "vec": torch.randn(B, T, 3)}
    b = Batch(obs=obs, action=torch.randint(0, 4, (B, T)), reward=torch.zeros(B, T), terminated=torch.zeros(B, T, dtype=torch.bool),
              is_first=torch.tensor([[True, False, False]] * B))
    loss, metrics = m.loss(b)
    loss.backward()
    assert torch.isfinite(loss) and metrics["wm/rec"] > 0
    dec = m.decode(m.last_states)
    assert dec["image"].shape == (B, T, 3, 64, 64) and dec["vec"].shape == (B, T, 3)


def test_world_model_loss_decreases_on_toy_sequences():
    """A deterministic toy system: the model must learn rewards, continues and reconstructions."""
    torch.manual_seed(0)
    m = _vec_model()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    B, T = 8, 16

    def batch():
        pos = torch.rand(B, 1, 2) * 2 - 1
        act = torch.rand(B, T, 2) * 2 - 1
        xs = pos + 0.2 * torch.cumsum(torch.cat([torch.zeros(B, 1, 2), act[:, :-1]], 1), 1)
        obs = torch.cat([xs, xs.norm(dim=-1, keepdim=True), torch.zeros(B, T, 2)], -1)
        rew = -xs.norm(dim=-1) * 3
        rew[:, 0] = 0
        first = torch.zeros(B, T, dtype=torch.bool)
        first[:, 0] = True
        term = torch.zeros(B, T, dtype=torch.bool)
        term[:, -1] = xs[:, -1, 0] > 0
        return Batch(obs=obs, action=act, reward=rew, terminated=term, is_first=first)

    first_metrics = None
    for i in range(150):
        loss, met = m.loss(batch())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if first_metrics is None:
            first_metrics = met
    with torch.no_grad():
        _, last = m.loss(batch())
    assert last["wm/rew"] < 0.5 * first_metrics["wm/rew"]
    assert last["wm/rec"] < 0.5 * first_metrics["wm/rec"]
    assert last["wm/loss"] < 0.6 * first_metrics["wm/loss"]


def test_sizes_and_bad_config():
    assert set(SIZES) >= {"XS", "S", "M", "L"}
    m = RSSM(gym.spaces.Box(0, 255, (3, 64, 64), np.uint8), gym.spaces.Discrete(3), size="XS")
    assert m.deter_dim == 256 and m.cnn_enc.out_dim == 24 * 8 * 16
    with pytest.raises(ConfigError, match="valid: XS"):
        RSSM(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(3), size="XXL")
    with pytest.raises(ValueError, match="valid"):
        RSSM(gym.spaces.Box(-1, 1, (3, 4)), gym.spaces.Discrete(3), size="XS")
