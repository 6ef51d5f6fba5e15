"""Offline algorithms end to end: a dataset collected by `python -m mbrl.collect`, every offline method
through `python -m mbrl.train` (tiny budgets), and a learning test: MOPO beats behaviour cloning."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mbrl.data.offline import load_d4rl

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), OMP_NUM_THREADS="1")
SMALL_MODEL = ["algo.rollout_batch=200", "algo.rollout_every=50", "algo.fit.max_updates=100", "learner.hidden=32",
               "model.hidden=32", "model.layers=2"]


def _run(args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _metric(run_dir: Path, key: str) -> list[float]:
    with open(run_dir / "metrics.csv") as f:
        return [float(r["value"]) for r in csv.DictReader(f) if r["key"] == key]


@pytest.fixture(scope="module")
def point_data(tmp_path_factory) -> Path:
    """toy/point, uniform-random behaviour policy (5000 transitions, 100 episodes), written by mbrl.collect;
    ref_max = the toy task's documented straight-to-goal return (-5.1)."""
    out = tmp_path_factory.mktemp("data") / "point-random.hdf5"
    _run(["-m", "mbrl.collect", "env=toy/point", "kind=random", "steps=5000", "ref_max=-5.1", "threads=1", f"out={out}"])
    return out


def test_collect_writes_d4rl_format(point_data):
    ds = load_d4rl(point_data)
    assert len(ds) == 5000 and ds.truncated.sum() == 100 and not ds.terminated.any()
    assert ds.eval_env == "toy/point" and ds.ref_scores[1] == -5.1
    # next_observations continue the episode: obs[t+1] == next_obs[t] except across episode ends
    inner = ~ds.truncated[:-1]
    np.testing.assert_array_equal(ds.obs[1:][inner], ds.next_obs[:-1][inner])
    assert np.all(np.abs(ds.action) <= 1.0)
    assert -70 < ds.episode_returns().mean() < -35  # a random policy's return on toy/point


def test_collect_errors():
    out = subprocess.run([sys.executable, "-m", "mbrl.collect", "env=toy/point", "kind=medium", "policy=/nonexistent", "out=/tmp/x.hdf5"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "not a SAC run dir" in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("algo", ["bc", "iql", "cql", "td3bc", "mopo", "morel", "mobile", "ravl"])
def test_offline_cli_end_to_end(algo, point_data, tmp_path):
    extra = SMALL_MODEL if algo in ("mopo", "morel", "mobile", "ravl") else ["learner.hidden=32"]
    if algo == "mobile":  # a rollout batch above the dataset's 5000 transitions: one warning line, before the model fit
        extra = [*extra, "algo.rollout_batch=9000"]
    out = _run(["-m", "mbrl.train", "env=d4rl/point-random", f"dataset_path={point_data}", f"algo={algo}", "steps=60", "eval_every=30",
          "eval_episodes=2", "checkpoint_every=30", "progress=false", "tensorboard=false", "threads=1", f"run_dir={tmp_path}", *extra])
    assert len(_metric(tmp_path, "eval/normalized_score")) == 2
    assert (tmp_path / "checkpoints" / "latest.pt").exists()
    warned = [line for line in out.stderr.splitlines() if "algo.rollout_batch=9000 is larger than the dataset (5000 transitions)" in line]
    assert len(warned) == (algo == "mobile"), out.stderr[-2000:]


def test_offline_missing_dataset_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mbrl.train", "env=d4rl/hopper-medium-v2", f"dataset_path={tmp_path}/nope.hdf5", "algo=iql", "progress=false"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"expected {tmp_path}/nope.hdf5" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_mopo_beats_behaviour_cloning(point_data, tmp_path):
    """On random-behaviour data BC can only imitate random actions; MOPO plans with its learned model
    and must get clearly closer to the goal (a broken model, penalty or SAC stays at BC's level)."""
    common = ["env=d4rl/point-random", f"dataset_path={point_data}", "eval_episodes=10", "progress=false", "tensorboard=false", "threads=1"]
    _run(["-m", "mbrl.train", *common, "algo=bc", "steps=500", f"run_dir={tmp_path / 'bc'}"])
    _run(["-m", "mbrl.train", *common, "algo=mopo", "steps=1500", "eval_every=1500", f"run_dir={tmp_path / 'mopo'}", "algo.rollout_batch=1000",
          "algo.rollout_every=250", "algo.fit.max_updates=1500", "learner.hidden=64", "model.hidden=64",
          "model.layers=2", "algo.real_ratio=0.1"])
    bc = _metric(tmp_path / "bc", "eval/normalized_score")[-1]
    mopo = _metric(tmp_path / "mopo", "eval/normalized_score")[-1]
    assert mopo > 35.0 and mopo > bc + 25.0, (mopo, bc)


RSSM_TINY = ["model.size=XS", "model.deter=32", "model.hidden=32", "model.stoch=4", "model.classes=4", "model.blocks=2", "model.layers=1"]


def test_rssm_mopo_end_to_end(point_data, tmp_path):
    """`model=rssm algo=mopo` on a D4RL-format file: the RSSM is fitted on the dataset's sequences, the
    penalty is the aleatoric signal of its heads (`model.heads`), SAC learns on its features and acts
    through the posterior. Without heads the run fails at build time with one line naming the fix."""
    common = ["-m", "mbrl.train", "env=d4rl/point-random", f"dataset_path={point_data}", "model=rssm", "algo=mopo", *RSSM_TINY,
              "progress=false", "tensorboard=false", "threads=1"]
    out = subprocess.run([sys.executable, *common], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr[-2000:]
    assert "needs the uncertainty signal 'aleatoric'" in out.stderr and "model.heads=5" in out.stderr, out.stderr
    _run([*common, "model.heads=3", "model.heads_hidden=32", "steps=60", "eval_every=30", "eval_episodes=2", "checkpoint_every=30",
          "algo.rollout_batch=64", "algo.rollout_every=20", "algo.fit.seq_updates=30", "algo.fit.seq_batch=8", "algo.fit.seq_length=16",
          "learner.hidden=32", f"run_dir={tmp_path}"])
    assert len(_metric(tmp_path, "eval/normalized_score")) == 2
    assert min(_metric(tmp_path, "dyna/imagined")) > 0 and min(_metric(tmp_path, "dyna/penalty")) > 0
    assert (tmp_path / "checkpoints" / "latest.pt").exists()
