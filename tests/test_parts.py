"""Unit tests of models/parts.py: the encoder, decoder, latent and heads shared by backbones."""
import gymnasium as gym
import numpy as np
import pytest
import torch

from mbrl.errors import UserError
from mbrl.models.dists import categorical_kl, symexp, symlog
from mbrl.models.parts import (CategoricalLatent, ContinueHead, ObsDecoder, ObsEncoder, RewardHead, action_spec, obs_layout)

torch.set_num_threads(1)

DICT = gym.spaces.Dict({"cam": gym.spaces.Box(0, 255, (3, 16, 16), np.uint8), "depth": gym.spaces.Box(0, 255, (1, 16, 16), np.uint8),
                        "pos": gym.spaces.Box(-1, 1, (3,), np.float32), "speed": gym.spaces.Box(-1, 1, (), np.float32)})


def _dict_obs(B=2, T=3):
    g = torch.Generator().manual_seed(0)
    return {"cam": torch.randint(0, 256, (B, T, 3, 16, 16), generator=g, dtype=torch.uint8),
            "depth": torch.randint(0, 256, (B, T, 1, 16, 16), generator=g, dtype=torch.uint8),
            "pos": torch.randn(B, T, 3, generator=g), "speed": torch.randn(B, T, generator=g)}


def test_action_spec():
    assert action_spec(gym.spaces.Discrete(5), "x") == (True, 5)
    assert action_spec(gym.spaces.Box(-1, 1, (3,)), "x") == (False, 3)
    for bad in (gym.spaces.Box(-1, 1, (2, 2)), gym.spaces.MultiDiscrete([2, 3])):
        with pytest.raises(UserError, match="model=x: action space .*valid: Discrete\\(n\\) or a 1-D Box"):
            action_spec(bad, "x")


def test_obs_layout_and_errors():
    lay = obs_layout(DICT, "m")
    assert lay.dict_obs and lay.img_keys == ("cam", "depth") and lay.img_channels == (3, 1) and lay.image_size == 16
    assert lay.vec_keys == ("pos", "speed") and lay.vec_dims == (3, 1)
    assert not obs_layout(gym.spaces.Box(-1, 1, (4,)), "m").dict_obs
    for space, msg in [(gym.spaces.Box(0, 255, (64, 64, 3), np.uint8), "channel-first"),
                       (gym.spaces.Dict({"a": gym.spaces.Box(0, 255, (3, 16, 16)), "b": gym.spaces.Box(0, 255, (3, 32, 32))}), "one size"),
                       (gym.spaces.Box(-1, 1, (2, 3)), "shape \\(2, 3\\)"), (gym.spaces.Discrete(3), "Discrete"),
                       (gym.spaces.Dict({}), "empty")]:
        with pytest.raises(UserError, match=f"model=m: .*{msg}"):
            obs_layout(space, "m")


def test_encoder_decoder_on_a_dict_space():
    torch.manual_seed(0)
    enc = ObsEncoder(DICT, depth=4, hidden=8, layers=1)
    assert enc.out_dim == 32 * 1 * 1 + 8
    obs = _dict_obs()
    emb = enc(obs)
    assert emb.shape == (2, 3, enc.out_dim) and torch.isfinite(emb).all()
    # flat lead dims give the same embedding
    flat = enc({k: v.reshape(6, *v.shape[2:]) for k, v in obs.items()}, lead=1)
    assert torch.allclose(flat.reshape(2, 3, -1), emb, atol=1e-6)
    with pytest.raises(UserError, match="lacks keys \\['speed'\\]"):
        enc({k: v for k, v in obs.items() if k != "speed"})

    dec = ObsDecoder(20, DICT, depth=4, hidden=8, layers=1)
    feat = torch.randn(2, 3, 20)
    out = dec.decode(feat)
    assert set(out) == set(DICT.spaces)
    assert out["cam"].shape == (2, 3, 3, 16, 16) and out["depth"].shape == (2, 3, 1, 16, 16)
    assert out["pos"].shape == (2, 3, 3) and out["speed"].shape == (2, 3)
    assert out["cam"].min() >= 0 and out["cam"].max() <= 255
    rec = dec.loss(feat, obs)
    assert rec.shape == (2, 3) and (rec > 0).all()
    # the loss is the pixel MSE in [-0.5, 0.5] (summed) plus the symlog MSE of the vectors
    img_pred = dec.cnn(feat.reshape(6, 20)).reshape(2, 3, 4, 16, 16)
    img_tgt = torch.cat([obs["cam"], obs["depth"]], 2).float() / 255 - 0.5
    vec_pred = dec.mlp(feat)
    vec_tgt = symlog(torch.cat([obs["pos"], obs["speed"].unsqueeze(-1)], -1))
    expect = (img_pred - img_tgt).square().sum((2, 3, 4)) + (vec_pred - vec_tgt).square().sum(-1)
    assert torch.allclose(rec, expect, rtol=1e-5)
    # decode is in the env's scale: symexp of the vector prediction, images back to [0, 255]
    assert torch.allclose(out["pos"], symexp(vec_pred)[..., :3], atol=1e-6)
    assert torch.allclose(out["cam"], ((img_pred[:, :, :3] + 0.5) * 255).clamp(0, 255), atol=1e-4)


def test_vector_only_decoder_returns_a_tensor():
    space = gym.spaces.Box(-1, 1, (4,), np.float32)
    enc, dec = ObsEncoder(space, 4, 16, 2), ObsDecoder(10, space, 4, 16, 2)
    assert enc.out_dim == 16 and enc(torch.randn(5, 7, 4)).shape == (5, 7, 16)
    assert enc(torch.randn(5, 4), lead=1).shape == (5, 16)
    assert torch.is_tensor(dec.decode(torch.randn(5, 10))) and dec.decode(torch.randn(5, 10)).shape == (5, 4)
    assert dec.loss(torch.randn(5, 7, 10), torch.randn(5, 7, 4)).shape == (5, 7)


def test_categorical_latent():
    torch.manual_seed(0)
    lat = CategoricalLatent(3, 5, unimix=0.01)
    assert lat.dim == 15
    logits = torch.randn(4, 15) * 30
    lp = lat.mix(logits)
    probs = lp.exp().reshape(4, 3, 5)
    assert torch.allclose(probs.sum(-1), torch.ones(4, 3), atol=1e-5) and probs.min() >= 0.01 / 5 * 0.999
    raw = logits.clone().requires_grad_()
    s = lat.sample(lat.mix(raw))
    assert torch.equal(s.detach().reshape(4, 3, 5).sum(-1), torch.ones(4, 3))
    assert set(s.detach().unique().tolist()) <= {0.0, 1.0}
    (s * torch.randn(4, 15)).sum().backward()
    assert raw.grad.abs().sum() > 0  # straight-through
    assert torch.allclose(lat.kl(lp, lp), torch.zeros(4), atol=1e-6)
    lq = lat.mix(torch.randn(4, 15))
    assert lat.kl(lp, lq).shape == (4,) and (lat.kl(lp, lq) > 0).all()
    per = categorical_kl(lp.reshape(4, 3, 5), lq.reshape(4, 3, 5))  # [4, 3]
    assert torch.allclose(lat.kl(lp, lq), per.sum(-1))  # summed over the categoricals
    uniform = lat.mix(torch.zeros(2, 15))
    assert torch.allclose(lat.entropy(uniform), torch.full((2,), 3 * np.log(5)), atol=1e-5)
    # the samples follow the probabilities
    p = lat.mix(torch.tensor([[2.0, 0, 0, 0, 0] * 3]))
    freq = torch.stack([lat.sample(p) for _ in range(4000)]).mean(0).reshape(3, 5)
    assert torch.allclose(freq, p.exp().reshape(3, 5), atol=0.03)


def test_reward_and_continue_heads():
    torch.manual_seed(0)
    head = RewardHead(12, 16, 2, bins=31)
    feat = torch.randn(6, 4, 12)
    assert torch.equal(head.mean(feat), torch.zeros(6, 4))  # zero-initialised output: exactly 0
    assert "bins" not in head.state_dict()
    opt = torch.optim.Adam(head.parameters(), 1e-2)
    target = feat[..., 0] * 5
    first = head.loss(feat, target).mean().item()
    for _ in range(200):
        opt.zero_grad()
        head.loss(feat, target).mean().backward()
        opt.step()
    assert head.loss(feat, target).mean().item() < 0.3 * first
    assert torch.allclose(head.mean(feat), target, atol=0.5)
    con = ContinueHead(12, 16, 1)
    p = con.prob(feat)
    assert p.shape == (6, 4) and ((p > 0) & (p < 1)).all()
    tgt = (feat[..., 1] > 0).float()
    assert torch.allclose(con.loss(feat, tgt), torch.nn.functional.binary_cross_entropy(p, tgt, reduction="none"), atol=1e-5)
