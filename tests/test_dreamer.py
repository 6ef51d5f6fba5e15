"""Dreamer: actor-critic unit tests and short learning tests (discrete and continuous actions)."""
import gymnasium as gym
import numpy as np
import pytest
import torch

from conftest import run_until
from mbrl.learners.actor_critic import ActorCritic, lambda_returns
from mbrl.models.rssm import RSSM
from mbrl.config import compose
from mbrl.train import build

torch.set_num_threads(1)


def test_lambda_returns_reference_values():
    r = torch.tensor([[1.0], [2.0], [3.0]])
    c = torch.tensor([[1.0], [0.0], [1.0]])
    v = torch.tensor([[10.0], [20.0], [30.0], [40.0]])
    g, lam = 0.9, 0.5
    R2 = 3 + g * 1 * 40
    R1 = 2 + 0.0
    R0 = 1 + g * 1 * ((1 - lam) * 20 + lam * R1)
    out = lambda_returns(r, c, v, g, lam)
    assert torch.allclose(out[:, 0], torch.tensor([R0, R1, R2]))
    # lam = 1: discounted Monte-Carlo return bootstrapped at the end
    assert lambda_returns(r, torch.ones(3, 1), v, 1.0, 1.0)[0, 0] == pytest.approx(1 + 2 + 3 + 40)


@pytest.mark.parametrize("space", [gym.spaces.Discrete(3), gym.spaces.Box(-1, 1, (2,), np.float32)])
def test_actor_critic_update_shapes_and_return_scale(space):
    torch.manual_seed(0)
    wm = RSSM(gym.spaces.Box(-1, 1, (4,), np.float32), space, size="XS", deter=32, hidden=32, stoch=4, classes=4, blocks=2)
    assert wm.differentiable_step
    ac = ActorCritic(wm.feat_dim, space, units=32, layers=1, horizon=5)
    start = wm.initial(12)
    a = ac.act(wm.features(start))
    assert a.shape == (12, 3 if isinstance(space, gym.spaces.Discrete) else 2)
    before = [p.detach().clone() for p in ac.actor.parameters()]
    wm_before = [p.detach().clone() for p in wm.parameters()]
    m = ac.imagine_and_update(wm, start)
    assert all(np.isfinite(v) for v in m.values())
    assert m["ac/ret_scale"] >= 1.0  # max(1, S)
    assert any(not torch.equal(b, p) for b, p in zip(before, ac.actor.parameters()))
    assert all(torch.equal(b, p) for b, p in zip(wm_before, wm.parameters()))  # the world model is untouched
    assert all(p.grad is None or p.requires_grad for p in wm.parameters())
    assert ac.actor_grad == ("reinforce" if isinstance(space, gym.spaces.Discrete) else "auto")  # auto: dynamics where differentiable


def _cfg(env: str, steps: int, train_ratio: float, eval_episodes: int, model: str = "rssm", *extra: str):
    """A short Dreamer run as the CLI composes it; small budget: larger learning rates than
    DreamerV3's long-run defaults."""
    model_keys = ["model.size=XS", "model.deter=64", "model.hidden=64", "model.stoch=8", "model.classes=8", "model.blocks=2"] if model == "rssm" else []
    return compose([f"env={env}", f"model={model}", "algo=dreamer", f"steps={steps}", "progress=false", "tensorboard=false", *model_keys,
                    "algo.batch_size=8", "algo.batch_length=16", f"algo.train_ratio={train_ratio}", "algo.prefill=200", "eval_every=0",
                    f"eval_episodes={eval_episodes}", "checkpoint_every=0", "algo.wm_opt.lr=3e-3", "learner.actor_opt.lr=1e-3",
                    "learner.critic_opt.lr=1e-3", *extra])


def test_dreamer_learns_discrete_chain(tmp_path):
    """toy/chain: random policy 6.5 +- 4.4, always-left (action 0) 0, optimum 26."""
    cfg = _cfg("toy/chain", steps=600, train_ratio=64, eval_episodes=4)
    algo = build(cfg, tmp_path)
    out = algo.run()
    assert out["eval/return"] >= 20.0, algo.eval_history


def test_dreamer_learns_continuous_point(tmp_path):
    """toy/point: random policy -52 +- 24 per episode, zero action about the same (the point stays
    put), moving straight to the goal -5; the mean of 8 evaluation episodes must beat -30."""
    cfg = _cfg("toy/point", 2000, 64, 8, "rssm", "eval_every=500")
    algo = build(cfg, tmp_path)
    evals = run_until(algo, -30.0)  # the first evaluation at -30 or better ends the run
    print("evals", [(s, round(m["eval/return"], 1)) for s, m in evals])
    assert max(m["eval/return"] for _, m in evals) >= -30.0, evals
    # a checkpoint resumes into a fresh algorithm
    algo.save()  # run_dir/checkpoints/latest.pt
    algo2 = build(cfg, tmp_path)
    algo2.load(tmp_path)
    assert algo2.env_steps == algo.env_steps > 0 and algo2.updates == algo.updates


def test_ensemble_backbone_learns_continuous_point(tmp_path):
    """`model=ensemble algo=dreamer`: actor-critic in the imagination of the probabilistic ensemble (its
    features are the observations). toy/point: random -52 +- 24, straight to the goal -5; a seeded run
    gave -20.7 after 1000 env steps (-12.6 after 2000)."""
    cfg = _cfg("toy/point", 1000, 64, 8, "ensemble", "model.hidden=64", "model.layers=2", "model.ensemble_size=3",
               "model.num_elites=3", "learner.units=64", "learner.layers=2")
    algo = build(cfg, tmp_path)
    out = algo.run()
    assert out["eval/return"] >= -30.0, algo.eval_history


def test_precision_auto_and_bad_value(monkeypatch):
    """`precision: auto` (the default) is bf16 exactly where the device computes bf16 natively, fp32
    elsewhere; explicit values are kept; an unknown one fails with the valid list."""
    import mbrl.algos.dreamer as dr

    cpu = torch.device("cpu")
    assert dr.resolve_precision("fp32", cpu) == "fp32" and dr.resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(dr, "native_bf16", lambda device: True)
    assert dr.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(dr, "native_bf16", lambda device: False)
    assert dr.resolve_precision("auto", cpu) == "fp32"
    with pytest.raises(dr.UserError, match=r"precision='fp16'; valid: auto, fp32, bf16"):
        dr.resolve_precision("fp16", cpu)
    assert compose(["algo=dreamer"]).algo.precision == "auto"
