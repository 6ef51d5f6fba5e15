"""Every registered backbone x every use of a world model, built from its config as the CLI builds it.

    cfg = mbrl.config.compose([...overrides])      # exactly `python -m mbrl.train <overrides>`
    algo = mbrl.train.build(cfg, run_dir)
    algo.run()                                     # a few updates at tiny sizes

Uses: dreamer (actor-critic in imagination), pets (MPC; PlaNet-style latent MPC on a latent backbone),
mbpo (Dyna), and the offline methods mopo, morel, mobile, ravl on a D4RL-format file written once per
module by `python -m mbrl.collect`. Observations: vectors (toy/point), discrete actions (toy/chain) and
16x16 pixels (toy/point-pixels). Backbones without every uncertainty signal of their own (`native_signals`)
run the offline methods with `model.heads=3`; without them, MOPO must refuse to build and name `model.heads`. A pair that is not supported must be refused at build time with a one-line
UserError; it is skipped with that line as the reason (listed in the test report). Pairs in
`MUST_RUN` may not be refused. The time of every pair is printed at the end of the module.
A few CLI smoke runs (`python -m mbrl.train` in a subprocess, ensemble backbone) close the module.
"""
from __future__ import annotations

import contextlib
import csv
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import mbrl.models as models
from conftest import run_cli
from mbrl.config import compose
from mbrl.errors import UserError
from mbrl.models.base import SIGNALS
from mbrl.train import build

pytestmark = pytest.mark.usefixtures("one_thread")

#: backbones left out of the matrix, with the reason (each is tested where named)
EXCLUDED = {"oracle": "the true simulator (model=oracle): no parameters to fit, so the online uses have nothing to train and the "
                      "matrix's 'parameters changed' check cannot hold; its offline path is tested in tests/test_offline_datasets.py"}
BACKBONES = [b for b in models.names() if b not in EXCLUDED]
ONLINE = ("dreamer", "pets", "mbpo")
OFFLINE = ("mopo", "morel", "mobile", "ravl")
OBS = {
    "vector": ["env=toy/point"],
    "discrete": ["env=toy/chain"],
    "pixels": ["env=toy/point-pixels", "+env_kwargs.size=16"],
}
COMMON = ["seed=0", "progress=false", "tensorboard=false", "eval_episodes=1", "checkpoint_every=0", "eval_every=0", "log_every=100000"]
# the model fit at tiny budgets (transition models: epochs / updates; sequence models: seq_*)
FIT = ["algo.fit.epochs=2", "algo.fit.min_updates=0", "algo.fit.max_updates=8", "algo.fit.seq_updates=3", "algo.fit.seq_batch=4",
       "algo.fit.seq_length=8"]
USES = {
    # train_ratio 32 / (batch 4 x length 8) = 1 update per env step after prefill: 20 updates
    "dreamer": ["algo=dreamer", "steps=70", "algo.prefill=50", "algo.batch_size=4", "algo.batch_length=8", "algo.train_ratio=32",
                "learner.horizon=4", "learner.units=16", "learner.layers=1"],
    "pets": ["algo=pets", "steps=60", "algo.prefill=50", "algo.horizon=4", "algo.particles=2", "planner.population=16",
             "planner.iterations=2", "planner.num_elites=4", *FIT],
    "mbpo": ["algo=mbpo", "steps=70", "algo.prefill=50", "algo.train_ratio=0.5", "algo.batch_size=16", "algo.model_train_every=10",
             "algo.rollout_batch=16", "algo.rollout_schedule=[0,100,1,2]", "algo.context=4", "learner.hidden=16", *FIT],
}
OFFLINE_KEYS = ["steps=6", "algo.batch_size=16", "algo.rollout_batch=16", "algo.rollout_horizon=2", "algo.rollout_every=3",
                "algo.context=4", "learner.hidden=16", *FIT]
USES.update({u: [f"algo={u}", *OFFLINE_KEYS] for u in OFFLINE})
HEADS = ["model.heads=3", "model.heads_hidden=16"]

PAIRS = [(b, u, o) for b in BACKBONES for u in ONLINE for o in OBS] + [(b, u, "offline") for b in BACKBONES for u in OFFLINE]
#: pairs that must run (a UserError there is a failure, not a skip)
MUST_RUN = {("ensemble", u, "vector") for u in ONLINE} | {("ensemble", u, "offline") for u in OFFLINE} | {("ensemble", "dreamer", "discrete")}
if "rssm" in BACKBONES:
    MUST_RUN |= {("rssm", u, o) for u in ONLINE for o in OBS if not (o == "discrete" and u in ("pets", "mbpo"))}
    MUST_RUN |= {("rssm", u, "offline") for u in OFFLINE}

TIMES: dict[str, float] = {}
REFUSED: dict[str, str] = {}


def hydra_value(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if v is None:
        return "null"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    return str(v)


def tiny(name: str) -> list[str]:
    return [f"model.{k}={hydra_value(v)}" for k, v in models.get(name).tiny.items()]


def one_line(msg) -> str:
    msg = str(msg).strip()
    assert msg and len(msg.splitlines()) == 1, f"a UserError must be one line: {msg!r}"
    return msg


@pytest.fixture(scope="module")
def point_data(tmp_path_factory) -> Path:
    """toy/point, uniform-random actions, 1000 transitions (20 episodes), D4RL format, via mbrl.collect."""
    out = tmp_path_factory.mktemp("data") / "point.hdf5"
    r = run_cli("mbrl.collect", "env=toy/point", "kind=random", "steps=1000", "threads=1", f"out={out}", timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.fixture(scope="module", autouse=True)
def report(request):
    """Print every pair's time and every refusal at the end of the module (shown with or without -s)."""
    yield
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    if tr is None or not TIMES:
        return
    lines = [f"matrix: {len(TIMES)} pairs ran in {sum(TIMES.values()):.1f} s (build + run, one thread)"]
    lines += [f"  {v:6.2f} s  {k}" for k, v in sorted(TIMES.items())]
    lines += [f"  refused  {k}: {v}" for k, v in sorted(REFUSED.items())]
    with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
        tr.write_line("")
        for line in lines:
            tr.write_line(line)


def needs_heads(backbone: str) -> bool:
    """Backbones without every uncertainty signal of their own run the offline methods with heads."""
    return not set(SIGNALS) <= set(models.get(backbone).native_signals)


def overrides(backbone: str, use: str, obs: str, data: Path | None) -> list[str]:
    o = [f"model={backbone}", *tiny(backbone), *USES[use], *COMMON]
    if use in OFFLINE:
        o += ["env=d4rl/point", f"dataset_path={data}"]
        if needs_heads(backbone):
            o += HEADS
    else:
        o += OBS[obs]
    return o


def snapshot(algo) -> dict[str, dict[str, torch.Tensor]]:
    """The parameters of every network among the algorithm's checkpointed modules."""
    return {k: {n: p.detach().clone() for n, p in m.named_parameters()} for k, m in algo.modules().items() if isinstance(m, torch.nn.Module)}


@pytest.mark.parametrize("backbone,use,obs", [pytest.param(*p, id="-".join(p)) for p in PAIRS])
def test_matrix(backbone, use, obs, request, tmp_path):
    data = request.getfixturevalue("point_data") if use in OFFLINE else None
    key = f"model={backbone} algo={use} obs={obs}"
    t0 = time.perf_counter()
    try:
        cfg = compose(overrides(backbone, use, obs, data))
        algo = build(cfg, tmp_path)
    except UserError as e:
        msg = one_line(e)
        if (backbone, use, obs) in MUST_RUN:
            pytest.fail(f"{key} must be supported but was refused: {msg}")
        REFUSED[key] = msg
        pytest.skip(f"{key} is not supported: {msg}")
    before = snapshot(algo)
    assert before, f"{key}: no networks among algo.modules()"
    metrics = algo.run()
    TIMES[key] = time.perf_counter() - t0
    assert math.isfinite(metrics["eval/return"]), metrics
    assert algo.updates > 0
    for mod, params in before.items():
        now = dict(algo.modules()[mod].named_parameters())
        changed = [n for n, p in params.items() if not torch.equal(p, now[n].detach())]
        assert changed, f"{key}: no parameter of {mod!r} changed in {algo.updates} updates"
    if use == "pets":
        assert algo.fitted and algo.fits >= 1
    if hasattr(algo, "dyna"):  # model rollouts happened and reached the learner's imagined buffer
        assert len(algo.dyna.imagined) > 0
    if use in OFFLINE and needs_heads(backbone):
        assert algo.model.heads is not None and set(SIGNALS) <= set(algo.model.signals)
    assert (tmp_path / "checkpoints" / "latest.pt").is_file() and (tmp_path / "metrics.csv").is_file()


@pytest.mark.parametrize("backbone", [b for b in BACKBONES if "aleatoric" not in models.get(b).native_signals] or
                         [pytest.param(None, marks=pytest.mark.skip(reason="every backbone has the aleatoric signal natively"))])
def test_offline_without_heads_names_heads(backbone, point_data, tmp_path):
    """A backbone without uncertainty signals refuses MOPO at build time and says how to get them."""
    cfg = compose([f"model={backbone}", *tiny(backbone), *USES["mopo"], *COMMON, "env=d4rl/point", f"dataset_path={point_data}"])
    with pytest.raises(UserError) as e:
        build(cfg, tmp_path)
    msg = one_line(e.value)
    assert "model.heads" in msg and "aleatoric" in msg, msg


def test_refusals_say_why():
    """The refusals the matrix met name the reason (run after the matrix in this module)."""
    for key, msg in REFUSED.items():
        if "algo=pets" in key and "obs=discrete" in key or "algo=mbpo" in key and "obs=discrete" in key:
            assert "continuous actions" in msg and "Discrete" in msg, (key, msg)
        if "model=ensemble" in key and "obs=pixels" in key:
            assert "vector observations" in msg, (key, msg)


# ------------------------------------------------------------------------------------------ CLI smoke runs
def _metric(run_dir: Path, key: str) -> list[float]:
    with open(run_dir / "metrics.csv") as f:
        return [float(r["value"]) for r in csv.DictReader(f) if r["key"] == key]


def _cli(args: list[str], cwd: Path):
    r = run_cli("mbrl.train", *args, "threads=1", cwd=cwd, timeout=300, env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.parametrize("use", ONLINE)
def test_cli_smoke_online(use, tmp_path):
    run_dir = tmp_path / "run"
    _cli(["model=ensemble", *tiny("ensemble"), *USES[use], *COMMON, "env=toy/point", f"run_dir={run_dir}"], tmp_path)
    ret = _metric(run_dir, "eval/return")
    assert len(ret) == 1 and np.isfinite(ret).all()
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "latest.pt").is_file()


def test_cli_smoke_offline(point_data, tmp_path):
    """Every offline use in one interpreter: a hydra multirun over the four methods. (Hydra composes a
    multirun's first config without the swept algo, so `algo.<key>=` overrides are given as `++algo.<key>=`.)"""
    keys = [f"++{k}" if k.startswith("algo.") else k for k in OFFLINE_KEYS]
    _cli(["--multirun", "model=ensemble", *tiny("ensemble"), f"algo={','.join(OFFLINE)}", *keys, *COMMON, "env=d4rl/point",
          f"dataset_path={point_data}"], tmp_path)
    for use in OFFLINE:
        runs = sorted((tmp_path / "runs" / use).rglob("metrics.csv"))
        assert len(runs) == 1, (use, list((tmp_path / "runs").rglob("metrics.csv")))
        ret = _metric(runs[0].parent, "eval/return")
        assert len(ret) == 1 and np.isfinite(ret).all()
