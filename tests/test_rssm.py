"""Unit tests of models/dists.py and models/rssm.py (DreamerV3 world model on the WorldModel protocol)."""
import gymnasium as gym
import numpy as np
import pytest
import torch

from mbrl.data.batch import Batch
from mbrl.models.dists import (BoundedNormal, OneHotCategorical, TruncatedNormal, TwoHot, categorical_kl, kl_free_bits,
                               symexp, symexp_bins, symlog, twohot, unimix_logits)
import mbrl.models as models
from mbrl.errors import UserError
from mbrl.models.base import Tracker
from mbrl.models.rssm import RSSM, SIZES, RSSMState

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


VEC = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
ACT = gym.spaces.Box(-1, 1, (2,), np.float32)


def _vec_model(**kw):
    return models.build({"name": "rssm", "size": "XS", "deter": 64, "hidden": 32, "stoch": 4, "classes": 4, "blocks": 4, **kw},
                        VEC, ACT, seed=0)


def _vec_batch(B=3, T=7):
    g = torch.Generator().manual_seed(0)
    first = torch.zeros(B, T, dtype=torch.bool)
    first[:, 0] = True
    first[1, 4] = True
    return Batch(obs=torch.randn(B, T, 5, generator=g), action=torch.rand(B, T, 2, generator=g) * 2 - 1,
                 reward=torch.randn(B, T, generator=g), terminated=torch.zeros(B, T, dtype=torch.bool), is_first=first)


def test_registry_build_seed_and_class_attributes():
    assert "rssm" in models.names() and models.get("rssm") is RSSM and RSSM.name == "rssm"
    assert RSSM.default_algo == "dreamer" and RSSM.has_decoder and RSSM.train_on == "sequences"
    assert not RSSM.markov_obs and RSSM.native_signals == frozenset()
    a, b, c = _vec_model(), _vec_model(), models.build({"name": "rssm", **RSSM.tiny}, VEC, ACT, seed=1)
    assert isinstance(a, RSSM) and a.feat_dim == 64 + 16 and a.action_dim == 2 and a.discrete is False
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))  # same seed, same init
    assert c.feat_dim == RSSM.tiny["deter"] + RSSM.tiny["stoch"] * RSSM.tiny["classes"]
    # None values take the size preset, as the yaml's nulls do
    d = models.build({"name": "rssm", "size": "XS", "deter": None, "stoch": 4, "classes": 4}, VEC, gym.spaces.Discrete(3), seed=0)
    assert d.deter_dim == 256 and d.discrete and d.action_dim == 3
    with pytest.raises(UserError, match="unknown keys .*'detr'.*valid: .*deter"):
        models.build({"name": "rssm", "detr": 64}, VEC, ACT)
    assert not hasattr(RSSM, "last_states") and not hasattr(a, "last_states")


def test_backbone_loss_returns_posterior_and_base_loss_detaches_it():
    m = _vec_model()
    b = _vec_batch()
    torch.manual_seed(3)
    loss, metrics, post = m.backbone_loss(b)
    assert loss.requires_grad and isinstance(post, RSSMState) and post.deter.shape == (3, 7, 64)
    assert post.deter.requires_grad  # backbone_loss may keep the graph; base.loss detaches
    assert {"wm/loss", "wm/rec", "wm/rew", "wm/con", "wm/kl", "wm/dyn", "wm/rep", "wm/prior_ent"} <= set(metrics)
    torch.manual_seed(3)
    loss2, metrics2, post2 = m.loss(b)
    assert not post2.deter.requires_grad and not post2.stoch.requires_grad
    assert loss2.item() == pytest.approx(loss.item()) and torch.equal(post2.deter, post.deter.detach())
    assert metrics2["wm/loss"] == pytest.approx(loss.item())


def test_action_input_scaling_and_one_hot():
    m = _vec_model()
    a = torch.tensor([[0.5, -0.25], [3.0, -4.0]])
    assert torch.allclose(m.action_input(a), torch.tensor([[0.5, -0.25], [1.0, -1.0]]))  # a / max(1, |a|)
    d = models.build({"name": "rssm", **RSSM.tiny}, VEC, gym.spaces.Discrete(4), seed=0)
    assert torch.equal(d.action_input(torch.tensor([2, 0])), torch.tensor([[0.0, 0, 1, 0], [1.0, 0, 0, 0]]))
    assert torch.equal(d.action_input(np.array([[3]])), torch.tensor([[0.0, 0, 0, 1]]))
    oh = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    assert torch.equal(d.action_input(oh), oh)  # model-format actions pass through unscaled


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


def test_tracker_one_step_at_a_time_matches_observe():
    """Acting through the base Tracker (one observation per call) gives the posterior of one
    observe() over the sequence (same Gumbel draws, same resets)."""
    m = _vec_model()
    b = _vec_batch()
    torch.manual_seed(4)
    post = m.observe(b.obs, b.action, b.is_first)
    tr = Tracker(m, 3)
    torch.manual_seed(4)
    for t in range(7):
        s = tr.observe(b.obs[:, t].numpy(), b.is_first[:, t].numpy())
        assert torch.allclose(s.deter, post.deter[:, t], atol=1e-5) and torch.equal(s.stoch, post.stoch[:, t])
        tr.acted(m.action_input(b.action[:, t]))


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
    space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (3, 64, 64), np.uint8), "vec": gym.spaces.Box(-1, 1, (3,), np.float32)})
    m = models.build({"name": "rssm", "size": "XS", "deter": 64, "hidden": 32, "depth": 4, "stoch": 4, "classes": 4, "blocks": 2},
                     space, gym.spaces.Discrete(4), seed=0)
    assert m.embed_dim == 4 * 8 * 4 * 4 + 32
    B, T = 2, 3
    obs = {"image": torch.randint(0, 255, (B, T, 3, 64, 64), dtype=torch.uint8), "vec": torch.randn(B, T, 3)}
    b = Batch(obs=obs, action=torch.randint(0, 4, (B, T)), reward=torch.zeros(B, T), terminated=torch.zeros(B, T, dtype=torch.bool),
              is_first=torch.tensor([[True, False, False]] * B))
    loss, metrics, post = m.loss(b)
    loss.backward()
    assert torch.isfinite(loss) and metrics["wm/rec"] > 0
    assert m.encoder.cnn.net[0].weight.grad.abs().sum() > 0 and m.encoder.mlp[0][0].weight.grad.abs().sum() > 0
    dec = m.decode(post)
    assert dec["image"].shape == (B, T, 3, 64, 64) and dec["vec"].shape == (B, T, 3)
    assert dec["image"].min() >= 0 and dec["image"].max() <= 255
    with pytest.raises(UserError, match="lacks keys \\['vec'\\]"):
        m.observe({"image": obs["image"]}, b.action, b.is_first)
    # tiny configuration on 16x16 pixels
    t = models.build({"name": "rssm", **RSSM.tiny}, gym.spaces.Box(0, 255, (1, 16, 16), np.uint8), gym.spaces.Discrete(2), seed=0)
    p = t.observe(torch.randint(0, 255, (2, 4, 1, 16, 16), dtype=torch.uint8), torch.randint(0, 2, (2, 4)), torch.ones(2, 4, dtype=torch.bool))
    assert t.decode(p).shape == (2, 4, 1, 16, 16)


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
        loss, met, _ = m.loss(batch())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if first_metrics is None:
            first_metrics = met
    with torch.no_grad():
        _, last, _ = m.loss(batch())
    assert last["wm/rew"] < 0.5 * first_metrics["wm/rew"]
    assert last["wm/rec"] < 0.5 * first_metrics["wm/rec"]
    assert last["wm/loss"] < 0.6 * first_metrics["wm/loss"]


def test_sizes_and_bad_config():
    assert set(SIZES) >= {"XS", "S", "M", "L"}
    m = RSSM(gym.spaces.Box(0, 255, (3, 64, 64), np.uint8), gym.spaces.Discrete(3), size="XS")
    assert m.deter_dim == 256 and m.encoder.cnn.out_dim == 24 * 8 * 16 and m.embed_dim == 24 * 8 * 16
    box3 = gym.spaces.Box(-1, 1, (3,))
    bad = [
        (dict(size="XXL"), box3, gym.spaces.Discrete(3), "unknown size 'XXL'; valid: XS"),
        (dict(size="XS"), gym.spaces.Box(-1, 1, (3, 4)), gym.spaces.Discrete(3), "shape \\(3, 4\\); valid"),
        (dict(size="XS", deter=30, blocks=8), box3, gym.spaces.Discrete(3), "deter=30 is not divisible by blocks=8; valid"),
        (dict(size="XS", stoch=0), box3, gym.spaces.Discrete(3), "valid: deter, hidden"),
        (dict(size="XS"), box3, gym.spaces.MultiDiscrete([2, 2]), "action space .*valid: Discrete"),
        (dict(size="XS"), gym.spaces.Box(0, 255, (3, 64, 32), np.uint8), gym.spaces.Discrete(3), "square"),
        (dict(size="XS"), gym.spaces.Box(0, 255, (3, 20, 20), np.uint8), gym.spaces.Discrete(3), "multiple of 16"),
        (dict(size="XS"), gym.spaces.Dict({"a": gym.spaces.Discrete(3)}), gym.spaces.Discrete(3), "observation 'a' is Discrete"),
    ]
    for kw, obs_space, act_space, msg in bad:
        with pytest.raises(UserError, match=msg):
            RSSM(obs_space, act_space, **kw)
    with pytest.raises(UserError, match="valid: XS"):
        models.build({"name": "rssm", "size": "XXL"}, box3, gym.spaces.Discrete(3))
