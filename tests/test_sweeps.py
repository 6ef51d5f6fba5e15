"""Sweeps end to end, with the real launchers and trackers: `sweep=smoke` (2 tasks x 2 seeds, fewer steps than
the preset) with `launcher=joblib` (2 workers, logger=mlflow) and with `launcher=submitit_local` (logger=wandb),
one of whose jobs is sent SIGUSR1 mid-training: it checkpoints, submitit requeues it and it resumes to the
same counters and evaluations as the uninterrupted joblib run. Then `python -m mbrl.report` (tables, PNGs,
the published baseline rows), `python -m mbrl.sweep` (status), a re-run that skips the finished jobs, and the
trackers' scalars read back from the wandb offline files and the mlflow store against tensorboard's."""
from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("hydra_plugins.hydra_joblib_launcher")

# a short version of the preset: the dir names carry these keys too
SHORT = ["steps=400", "eval_every=200", "eval_episodes=1"]
NAMES = ["env=dmc-cartpole-swingup,eval_episodes=1,eval_every=200,steps=400,seed=0",
         "env=dmc-cartpole-swingup,eval_episodes=1,eval_every=200,steps=400,seed=1",
         "env=toy-point,eval_episodes=1,eval_every=200,steps=400,seed=0",
         "env=toy-point,eval_episodes=1,eval_every=200,steps=400,seed=1"]
PREEMPTED = NAMES[2]


def _env() -> dict:
    from conftest import ROOT

    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("MBRL_DEBUG", None)
    e["WANDB_MODE"] = "offline"
    e.pop("MLFLOW_TRACKING_URI", None)
    return e


def _sweep_dir(cwd: Path) -> Path:
    return cwd / "runs" / "sweeps" / "smoke"


@pytest.fixture(scope="module")
def joblib_sweep(tmp_path_factory):
    from conftest import run_cli

    cwd = tmp_path_factory.mktemp("joblib")
    t = time.time()
    res = run_cli("mbrl.train", "--multirun", "sweep=smoke", "launcher=joblib", "hydra.launcher.n_jobs=2", "logger=mlflow", *SHORT,
                  cwd=cwd, timeout=600, env={"MLFLOW_TRACKING_URI": ""})
    assert res.returncode == 0, res.stderr[-3000:]
    print(f"joblib sweep: {time.time() - t:.1f} s")
    return cwd


@pytest.fixture(scope="module")
def submitit_sweep(tmp_path_factory):
    """The same sweep under submitit_local; the toy/point seed-0 job gets SIGUSR1 once it has trained a little."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cwd = tmp_path_factory.mktemp("submitit")
    t = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "mbrl.train", "--multirun", "sweep=smoke", "launcher=submitit_local", "logger=wandb",
                             *SHORT], cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = _sweep_dir(cwd) / PREEMPTED
    signalled_at = None
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            rows = (run / "metrics.csv").read_text().splitlines()[1:] if (run / "metrics.csv").is_file() else []
            steps = [int(r.split(",", 1)[0]) for r in rows if r and r[0].isdigit()]
            if steps and max(steps) >= 100:  # past the prefill, learning: preempt it
                st = json.loads((run / "status.json").read_text())
                assert st["state"] == "running", st
                os.kill(int(st["pid"]), signal.SIGUSR1)
                signalled_at = max(steps)
                break
            time.sleep(0.05)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert signalled_at is not None, "the job finished before it could be preempted"
    print(f"submitit sweep: {time.time() - t:.1f} s (SIGUSR1 after step {signalled_at})")
    return cwd


def _eval_rows(run: Path) -> list[tuple[int, str]]:
    return [(int(r["step"]), r["value"]) for r in csv.DictReader(open(run / "metrics.csv")) if r["key"] == "eval/return"]


def test_joblib_sweep_run_dirs_and_report(joblib_sweep, cli):
    root = _sweep_dir(joblib_sweep)
    assert sorted(p.name for p in root.iterdir()) == NAMES  # the swept keys and the seed name each run
    for name in NAMES:
        st = json.loads((root / name / "status.json").read_text())
        assert st["state"] == "done" and st["env_steps"] == 400 and st["attempts"] == 1, (name, st)
    # joblib ran 2 jobs at once: two worker processes
    assert len({json.loads((root / n / "status.json").read_text())["pid"] for n in NAMES}) == 2
    out = joblib_sweep / "report"
    res = cli("mbrl.report", str(root), "--out", str(out), "--reps", "200")
    assert res.returncode == 0, res.stderr
    assert "reading runs: 4/4" in res.stderr
    md = (out / "report.md").read_text()
    for png in ("curves_toy_point.png", "curves_dmc_cartpole-swingup.png", "aggregates_dmc.png", "profiles_dmc.png"):
        assert (out / png).stat().st_size > 5000, png
        assert png in md
    tasks = list(csv.DictReader(open(out / "tasks.csv")))
    mine = [t for t in tasks if t["published"] == "0"]
    assert {(t["env"], t["n"]) for t in mine} == {("toy/point", "2"), ("dmc/cartpole-swingup", "2")}
    published = {t["method"] for t in tasks if t["published"] == "1" and t["env"] == "dmc/cartpole-swingup"}
    assert {"DreamerV3", "TD-MPC2", "SAC (TD-MPC2 runs)"} <= published
    assert all(t["source"] for t in tasks)
    aggs = {(a["suite"], a["method"], a["metric"]) for a in csv.DictReader(open(out / "aggregates.csv"))}
    assert ("dmc", "sac", "iqm") in aggs and ("dmc", "DreamerV3", "optimality_gap") in aggs
    assert "| dmc/cartpole-swingup | DreamerV3 * |" in md


def test_rerun_skips_finished_and_runs_missing(joblib_sweep, cli):
    """A second run of the same sweep: the 3 finished jobs are skipped, the one whose dir was removed runs;
    then a job that failed is listed by mbrl.sweep and mbrl.report with its error line."""
    import shutil

    root = _sweep_dir(joblib_sweep)
    before = {n: (root / n / "metrics.csv").stat().st_mtime_ns for n in NAMES}
    shutil.rmtree(root / NAMES[3])
    res = cli("mbrl.train", "--multirun", "sweep=smoke", "launcher=joblib", *SHORT, cwd=joblib_sweep, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stderr.count("skipped ") == 3 and f"run dir: runs/sweeps/smoke/{NAMES[3]}" in res.stderr, res.stderr[-2000:]
    assert all((root / n / "metrics.csv").stat().st_mtime_ns == before[n] for n in NAMES[:3])
    assert json.loads((root / NAMES[3] / "status.json").read_text())["state"] == "done"
    # a failing job (SAC on a discrete-action task) in the sweep: recorded in its run dir with its error line
    res = cli("mbrl.train", "--multirun", "sweep=smoke", "env=toy/chain", "seed=0", *SHORT, cwd=joblib_sweep, timeout=300)
    assert res.returncode == 1 and "1 job(s) of the sweep failed" in res.stderr, res.stderr[-2000:]
    res = cli("mbrl.sweep", str(root))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "5 runs: 4 done, 0 running, 0 interrupted, 1 failed, 0 lost" in res.stdout, res.stdout
    bad = next(line for line in res.stdout.splitlines() if "toy-chain" in line)
    assert "failed" in bad and "continuous actions" in bad.split("failed", 1)[1], bad  # the error line, not just a state
    res = cli("mbrl.report", str(root), "--out", str(joblib_sweep / "report2"), "--reps", "50", "--quiet")
    assert res.returncode == 0, res.stderr
    md = (joblib_sweep / "report2" / "report.md").read_text()
    assert "## Failed or unfinished runs" in md and "continuous actions" in md.split("## Failed or unfinished runs", 1)[1]


def test_submitit_preempted_job_requeues_and_resumes(submitit_sweep, joblib_sweep):
    root = _sweep_dir(submitit_sweep)
    assert sorted(p.name for p in root.iterdir()) == NAMES
    st = json.loads((root / PREEMPTED / "status.json").read_text())
    assert st["state"] == "done" and st["attempts"] == 2, st  # preempted once, requeued, finished
    others = [json.loads((root / n / "status.json").read_text()) for n in NAMES if n != PREEMPTED]
    assert all(o["state"] == "done" and o["attempts"] == 1 for o in others)
    logs = "".join(p.read_text() for p in (submitit_sweep / "runs" / ".multirun").rglob(f"{st['job_id']}_0_log.err"))
    assert "SIGUSR1" in logs and "preempted" in logs, logs[-2000:]
    # the same counters and the same evaluations as the uninterrupted run of the same job (joblib's)
    ref = json.loads((_sweep_dir(joblib_sweep) / PREEMPTED / "status.json").read_text())
    assert (st["env_steps"], st["updates"]) == (ref["env_steps"], ref["updates"]) == (400, 300)
    assert _eval_rows(root / PREEMPTED) == _eval_rows(_sweep_dir(joblib_sweep) / PREEMPTED)


def _same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert [s for s, _ in a[k]] == [s for s, _ in b[k]], k
        assert all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-6) for (_, x), (_, y) in zip(a[k], b[k])), k


def test_trackers_write_the_tensorboard_scalars(joblib_sweep, submitit_sweep):
    """wandb (offline files, a preempted run's two attempts) and mlflow (file store) hold exactly the
    scalars tensorboard holds, at the same steps; the runs are grouped by the sweep's name."""
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from mbrl.utils.trackers import read_mlflow, read_tensorboard, read_wandb_offline

    for name in (PREEMPTED, NAMES[0]):
        run = _sweep_dir(submitit_sweep) / name
        tb = read_tensorboard(run)
        assert {"eval/return", "train/return", "sac/critic_loss"} <= set(tb)
        _same(read_wandb_offline(run), tb)
    assert len(list((_sweep_dir(submitit_sweep) / PREEMPTED).glob("wandb/offline-run-*"))) == 2  # one per attempt
    for name in NAMES:
        run = _sweep_dir(joblib_sweep) / name
        if not (run / "mlflow_run_id.txt").is_file():
            continue  # the re-run test re-made one of them without a tracker
        _same(read_mlflow(run), read_tensorboard(run))
        client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
        assert client.get_experiment_by_name("smoke") is not None  # grouped by the sweep preset


def test_launcher_and_logger_bad_input(cli, tmp_path):
    res = cli("mbrl.train", "--multirun", "sweep=smoke", "launcher=nope", cwd=tmp_path)
    assert res.returncode == 2 and "unknown launcher 'nope'; valid: basic, joblib, ray, submitit_local, submitit_slurm" in res.stderr
    res = cli("mbrl.train", "--multirun", "sweep=smoke", "launcher.n_jobs=2", cwd=tmp_path)
    assert res.returncode == 2 and "hydra.launcher.<key>" in res.stderr
    res = cli("mbrl.train", "env=toy/point", "steps=10", "logger=neptune", cwd=tmp_path)
    assert res.returncode == 2 and "logger='neptune' is not a tracker; valid: wandb, mlflow" in res.stderr, res.stderr


def test_report_bad_input(cli, tmp_path):
    res = cli("mbrl.report", str(tmp_path / "nope"))
    assert res.returncode == 2 and res.stderr.strip().startswith("error:") and len(res.stderr.strip().splitlines()) == 1
    res = cli("mbrl.report", str(tmp_path))
    assert res.returncode == 2 and "no run directories" in res.stderr
    res = cli("mbrl.sweep", str(tmp_path / "nope"))
    assert res.returncode == 2 and res.stderr.startswith("error:")


@pytest.mark.ray
@pytest.mark.skipif(not os.environ.get("MBRL_TEST_RAY"), reason="starts a local Ray cluster: MBRL_TEST_RAY=1 pytest -m ray tests/test_sweeps.py")
def test_ray_sweep(cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    res = cli("mbrl.train", "--multirun", "sweep=smoke", "launcher=ray", "env=toy/point", *SHORT, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    root = _sweep_dir(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == NAMES[2:]
    assert all(json.loads((root / n / "status.json").read_text())["state"] == "done" for n in NAMES[2:])
