"""No run loses data: SIGINT / SIGTERM checkpoint the step reached and a resume continues to the same
counters and buffer as an uninterrupted run; a damaged latest.pt falls back to previous.pt with one
warning line; a non-finite loss stops the run with the last good checkpoint intact; resume refuses
overrides that would change the run; a --multirun survives a bad job; NaN datasets name the bad row.
All through `python -m mbrl.train` in a subprocess, as a user runs it (SAC on toy/point: seconds)."""
from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, run_cli

BASE = ["mbrl.train", "env=toy/point", "algo=sac", "algo.prefill=200", "progress=false", "tensorboard=false", "threads=1",
        "eval_episodes=1", "learner.hidden=32", "log_every=100"]


def _ckpt(run: Path, name: str = "latest.pt") -> dict:
    return torch.load(run / "checkpoints" / name, weights_only=False)


def _buffer(run: Path, ckpt: dict) -> dict:
    with np.load(run / "checkpoints" / ckpt["buffer_file"], allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _start(args: list[str]) -> subprocess.Popen:
    import os

    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("MBRL_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _steps_logged(run: Path) -> int:
    path = run / "metrics.csv"
    if not path.is_file():
        return 0
    with open(path) as f:
        return max((int(float(r["step"])) for r in csv.DictReader(f)), default=0)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The reference: 1200 steps uninterrupted."""
    run = tmp_path_factory.mktemp("straight") / "run"
    res = run_cli(*BASE, "steps=1200", "eval_every=0", "checkpoint_every=0", f"run_dir={run}")
    assert res.returncode == 0, res.stderr[-2000:]
    return run


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_checkpoints_and_resume_matches_uninterrupted(straight, tmp_path, sig):
    run = tmp_path / "run"
    p = _start([*BASE, "steps=1200", "eval_every=0", "checkpoint_every=0", f"run_dir={run}"])
    deadline = time.time() + 120
    while _steps_logged(run) < 400 and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 128 + sig, err[-2000:]
    lines = [l for l in err.splitlines() if l.startswith("interrupted")]
    assert len(lines) == 1 and "resume=" in lines[0] and "Traceback" not in err, err[-2000:]
    mid = _ckpt(run)
    assert 400 <= mid["counters"]["env_steps"] < 1200, "the checkpoint holds the step reached"
    res = run_cli("mbrl.train", f"resume={run}")
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = _ckpt(straight), _ckpt(run)
    for k in ("env_steps", "updates", "episodes"):
        assert a["counters"][k] == b["counters"][k], k
    ba, bb = _buffer(straight, a), _buffer(run, b)
    assert set(ba) == set(bb)
    for k in ba:
        if ba[k].dtype.kind in "fiub":
            np.testing.assert_array_equal(ba[k], bb[k], err_msg=k)
    # metrics.csv: no step logged twice after the resume; wall_time continues
    with open(run / "metrics.csv") as f:
        rows = [(int(float(r["step"])), r["key"], float(r["wall_time"])) for r in csv.DictReader(f)]
    keys = [(s, k) for s, k, _ in rows]
    assert len(keys) == len(set(keys)), "duplicate metric rows after resume"
    walls = [w for _, _, w in rows]
    assert walls == sorted(walls)


def test_damaged_latest_falls_back_to_previous(tmp_path):
    run = tmp_path / "run"
    res = run_cli(*BASE, "steps=600", "eval_every=0", "checkpoint_every=300", f"run_dir={run}")
    assert res.returncode == 0, res.stderr[-2000:]
    ck = run / "checkpoints"
    assert (ck / "latest.pt").is_file() and (ck / "previous.pt").is_file()
    assert _ckpt(run, "previous.pt")["counters"]["env_steps"] == 300
    data = (ck / "latest.pt").read_bytes()
    (ck / "latest.pt").write_bytes(data[: len(data) // 3])  # truncated
    # evaluate: one warning line, metrics from the previous checkpoint
    res = run_cli("mbrl.evaluate", str(run), "--episodes", "1")
    assert res.returncode == 0, res.stderr[-2000:]
    warn = [l for l in res.stderr.splitlines() if l.startswith("warning:")]
    assert len(warn) == 1 and "latest.pt" in warn[0] and "previous.pt" in warn[0], res.stderr
    # resume: one warning line, continues from step 300 to 900
    res = run_cli("mbrl.train", f"resume={run}", "steps=900")
    assert res.returncode == 0, res.stderr[-2000:]
    warn = [l for l in res.stderr.splitlines() if l.startswith("warning:")]
    assert len(warn) == 1 and "damaged" in warn[0], res.stderr
    assert (ck / "latest.pt.damaged").is_file(), "the damaged file is set aside, not deleted"
    assert _ckpt(run)["counters"]["env_steps"] == 900
    # a finished run resumed again: nothing to do, no rows appended
    before = (run / "metrics.csv").read_text()
    res = run_cli("mbrl.train", f"resume={run}")
    assert res.returncode == 0 and "already finished" in res.stderr, res.stderr[-2000:]
    assert (run / "metrics.csv").read_text() == before


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, None])
def test_unreadable_checkpoint_is_one_line(tmp_path, content):
    run = tmp_path / "run"
    res = run_cli(*BASE, "steps=250", "eval_every=0", "checkpoint_every=0", f"run_dir={run}")
    assert res.returncode == 0, res.stderr[-2000:]
    latest = run / "checkpoints" / "latest.pt"
    if content is None:  # a checkpoint of another env (same algo): refused by name
        other = tmp_path / "other"
        res = run_cli(*BASE, "env=gym/Pendulum-v1", "steps=250", "eval_every=0", "checkpoint_every=0", f"run_dir={other}")
        assert res.returncode == 0, res.stderr[-2000:]
        latest.write_bytes((other / "checkpoints" / "latest.pt").read_bytes())
    else:
        latest.write_bytes(content)
    for args in (("mbrl.train", f"resume={run}", "steps=400"), ("mbrl.evaluate", str(run), "--episodes", "1")):
        res = run_cli(*args)
        err = res.stderr.strip().splitlines()
        assert res.returncode == 2, res.stderr[-2000:]
        assert "Traceback" not in res.stderr and len([l for l in err if l.startswith("error:")]) == 1, res.stderr[-2000:]
        assert "latest.pt" in res.stderr, res.stderr


def test_truncated_buffer_file_is_one_line(tmp_path):
    """A truncated replay-buffer file: `train resume=` fails with one line naming it; `evaluate` (which
    needs only the networks) still works."""
    run = tmp_path / "run"
    res = run_cli(*BASE, "steps=250", "eval_every=0", "checkpoint_every=0", f"run_dir={run}")
    assert res.returncode == 0, res.stderr[-2000:]
    buf = run / "checkpoints" / _ckpt(run)["buffer_file"]
    data = buf.read_bytes()
    buf.write_bytes(data[: len(data) // 2])
    res = run_cli("mbrl.train", f"resume={run}", "steps=400")
    err = [l for l in res.stderr.strip().splitlines() if l.startswith("error:")]
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert len(err) == 1 and buf.name in err[0] and "damaged" in err[0], res.stderr
    res = run_cli("mbrl.evaluate", str(run), "--episodes", "1")
    assert res.returncode == 0 and '"env_steps": 250' in res.stdout, res.stderr[-2000:]


def test_nan_loss_stops_with_last_checkpoint(tmp_path):
    """SAC with an absurd learning rate diverges to a non-finite loss within a few hundred updates."""
    run = tmp_path / "run"
    res = run_cli(*BASE, "steps=3000", "eval_every=0", "checkpoint_every=200", "learner.lr=1e12", "learner.init_alpha=1e6",
                  f"run_dir={run}")
    assert res.returncode == 2, res.stderr[-2000:]
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("error: training diverged: non-finite") and "last good checkpoint" in line, res.stderr[-2000:]
    ck = _ckpt(run)
    assert ck["counters"]["env_steps"] < 3000
    assert all(bool(torch.isfinite(v).all()) for v in ck["modules"]["learner"].values() if torch.is_tensor(v) and v.is_floating_point())
    res = run_cli("mbrl.evaluate", str(run), "--episodes", "1")
    assert res.returncode == 0, res.stderr[-2000:]


def test_resume_refuses_changes_to_the_run(straight):
    for bad in ("env=gym/Pendulum-v1", "algo=mbpo", "learner.lr=0.1", "seed=3"):
        res = run_cli("mbrl.train", f"resume={straight}", bad)
        assert res.returncode == 2, (bad, res.stderr[-2000:])
        line = res.stderr.strip().splitlines()[-1]
        assert "resume cannot change" in line and "steps" in line, (bad, line)


def test_multirun_survives_a_bad_job(tmp_path):
    res = run_cli("mbrl.train", "--multirun", "env=toy/chain,toy/point", "algo=sac", "steps=210", "algo.prefill=200",
                  "progress=false", "tensorboard=false", "eval_episodes=1", "threads=1", "learner.hidden=16", cwd=tmp_path)
    assert res.returncode == 1, res.stderr[-2000:]
    assert "1 job(s) of the sweep failed" in res.stderr and "toy/chain" in res.stderr and "continuous actions" in res.stderr
    runs = tmp_path / "runs" / "sac"
    assert (runs / "toy" / "point").is_dir(), "the good job ran"
    assert not (runs / "toy" / "chain").exists(), "the failed job left no run dir"


def test_nan_dataset_names_the_row(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "bad.hdf5"
    n = 50
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n, 2)).astype(np.float32)
    obs[17, 1] = np.nan
    with h5py.File(path, "w") as f:
        f["observations"] = obs
        f["next_observations"] = rng.normal(size=(n, 2)).astype(np.float32)
        f["actions"] = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
        f["rewards"] = rng.normal(size=n).astype(np.float32)
        f["terminals"] = np.zeros(n, dtype=bool)
        f["timeouts"] = np.arange(n) % 10 == 9
    from mbrl.data.offline import load
    from mbrl.errors import UserError

    with pytest.raises(UserError, match="row 17"):
        load("d4rl/toy-point-bad", dataset_path=str(path))


BAD_INPUTS = ["steps=abc", "algo.batch_size=abc", "eval_every=abc", "seed=-1", "seed=1.5", "device=gpu", "foo", "steps=0",
              "steps=-5", "steps=150.7", "threads=0", "progress=maybe", "eval_episodes=0", "env=d4rl/hopper-medium-v2",
              "learner.lr=fast", "env_kwargs.bogus=1"]
if not torch.cuda.is_available():
    BAD_INPUTS.append("device=cuda")


def test_env_kwargs_are_checked_by_name():
    """An unknown `env_kwargs` key names the env's valid keys (its constructor's, followed up the class
    chain through **kwargs: Hopper-v5 -> MujocoEnv); the valid ones are accepted."""
    from mbrl import envs
    from mbrl.errors import UserError

    names, open_ended = envs.kwarg_names("gym/Hopper-v5")
    assert not open_ended and {"frame_skip", "healthy_reward", "width", "time_limit"} <= set(names)
    assert "speed" in envs.kwarg_names("toy/point")[0] and "length" not in envs.kwarg_names("toy/memory-8")[0]
    with pytest.raises(UserError, match=r"unknown env_kwargs key 'bogus' for env=toy/chain; valid: .*horizon, length"):
        envs.make("toy/chain", bogus=1)
    env = envs.make("toy/point", speed=0.2, horizon=7)
    env.reset(seed=0)
    env.close()


def test_bad_values_get_one_line(tmp_path):
    """Every bad value: exit code 2, exactly one line on stderr, no traceback, no run directory."""
    from concurrent.futures import ThreadPoolExecutor

    def one(bad: str):
        return bad, run_cli("mbrl.train", "env=toy/point", "algo=sac", bad, cwd=tmp_path)

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(one, BAD_INPUTS))
    for bad, res in results:
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2, (bad, res.stderr[-1500:])
        assert len(lines) == 1 and lines[0].startswith("error: "), (bad, res.stderr[-1500:])
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.yaml"))


def test_atari_logs_human_normalized_score(tmp_path):
    """An Atari run logs the human-normalised score beside each evaluation return: (return - random) /
    (human - random) with the published scores of envs/scores.py (Pong: random -20.7, human 14.6)."""
    from mbrl.algos.base import human_normalized

    r = run_cli("mbrl.train", "env=atari/pong", "model=rssm", "model.size=XS", "model.deter=32", "model.hidden=32", "model.stoch=4",
                "model.classes=4", "model.blocks=1", "steps=40", "algo.prefill=30", "algo.batch_size=2", "algo.batch_length=8",
                "algo.train_ratio=16", "eval_episodes=1", "env_kwargs.time_limit=15", "env_kwargs.size=16", "progress=false",
                "tensorboard=false", "threads=1", f"run_dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    with open(tmp_path / "metrics.csv") as f:
        rows = {row["key"]: float(row["value"]) for row in csv.DictReader(f)}
    assert rows["eval/human_normalized_score"] == pytest.approx((rows["eval/return"] + 20.7) / (14.6 + 20.7), abs=1e-5)
    assert "eval/human_normalized_score" in r.stdout
    assert human_normalized("gym/Pendulum-v1", 1.0) == {} and human_normalized("atari/tetris", 1.0) == {}
