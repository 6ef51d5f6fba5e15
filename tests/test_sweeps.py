"""Sweeps end to end, with the real launchers and trackers: `sweep=smoke` (2 tasks x 2 seeds, fewer steps than
the preset) with `launcher=joblib` (2 workers, logger=mlflow), then a re-run (skips the finished jobs, records a
failing one), `python -m mbrl.sweep` and `python -m mbrl.report` (tables, PNGs, the published baseline rows);
and with `launcher=submitit_local` (logger=wandb), one of whose jobs is sent SIGUSR1 mid-training: it
checkpoints, submitit requeues it and it resumes to the counters, evaluations and episode returns of an
uninterrupted run. The trackers' scalars are read back (wandb's offline files, the mlflow store) and compared
with tensorboard's. Each fixture serves one test, so `pytest -n 2` runs each sweep once.
"""
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

# a short version of the preset (the dir names carry the keys that change a run: not log_every)
SHORT = ["steps=250", "eval_every=250", "eval_episodes=1", "log_every=50"]
NAMES = ["env=dmc-cartpole-swingup,eval_episodes=1,eval_every=250,steps=250,seed=0",
         "env=dmc-cartpole-swingup,eval_episodes=1,eval_every=250,steps=250,seed=1",
         "env=toy-point,eval_episodes=1,eval_every=250,steps=250,seed=0",
         "env=toy-point,eval_episodes=1,eval_every=250,steps=250,seed=1"]
PREEMPTED = NAMES[2]
CHAIN = ["env=toy-chain,eval_episodes=1,eval_every=250,steps=250,seed=0", "env=toy-chain,eval_episodes=1,eval_every=250,steps=250,seed=1"]


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


def test_joblib_sweep_rerun_status_and_report(joblib_sweep, cli, capsys):
    """joblib: one dir per job named by its swept keys and seed; a second run of the sweep (here with the basic
    launcher, and a task SAC cannot learn added) skips the 3 finished jobs, runs the one whose dir was removed and
    records the failing jobs with their error line; `mbrl.sweep` and `mbrl.report` list them; the report has its
    tables, PNGs and the published baseline rows."""
    import shutil

    root = _sweep_dir(joblib_sweep)
    assert sorted(p.name for p in root.iterdir()) == NAMES  # the swept keys and the seed name each run
    for name in NAMES:
        st = json.loads((root / name / "status.json").read_text())
        assert st["state"] == "done" and st["env_steps"] == 250 and st["attempts"] == 1, (name, st)
    # joblib ran 2 jobs at once: two worker processes
    assert len({json.loads((root / n / "status.json").read_text())["pid"] for n in NAMES}) == 2
    # logger=mlflow: each run's file store holds exactly tensorboard's scalars, in the sweep's experiment
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from mbrl.utils.trackers import read_mlflow, read_tensorboard

    for name in NAMES:
        run = root / name
        _same(read_mlflow(run), read_tensorboard(run))
        client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
        assert client.get_run((run / "mlflow_run_id.txt").read_text().strip()).info.experiment_id == \
            client.get_experiment_by_name("smoke").experiment_id  # grouped by the sweep preset
    before = {n: (root / n / "metrics.csv").stat().st_mtime_ns for n in NAMES}
    shutil.rmtree(root / NAMES[3])
    res = cli("mbrl.train", "--multirun", "sweep=smoke", "env=toy/point,dmc/cartpole-swingup,toy/chain", *SHORT, cwd=joblib_sweep, timeout=300)
    assert res.returncode == 1 and "2 job(s) of the sweep failed" in res.stderr, res.stderr[-3000:]
    assert res.stderr.count("skipped ") == 3 and f"run dir: runs/sweeps/smoke/{NAMES[3]}" in res.stderr, res.stderr[-3000:]
    assert all((root / n / "metrics.csv").stat().st_mtime_ns == before[n] for n in NAMES[:3])
    assert json.loads((root / NAMES[3] / "status.json").read_text())["state"] == "done"

    from mbrl import sweep

    rows = {r["run"]: r for r in sweep.summarize(root)}
    assert sorted(rows) == sorted(NAMES + CHAIN)
    assert all(rows[n]["state"] == "done" and rows[n]["step"] == 250 for n in NAMES)
    assert all(rows[n]["state"] == "failed" and "continuous actions" in rows[n]["error"] for n in CHAIN), rows
    from mbrl import report

    capsys.readouterr()
    assert sweep.main([str(root)]) == 1  # python -m mbrl.sweep: exit 1 when a run failed
    text = capsys.readouterr().out
    assert "6 runs: 4 done, 0 running, 0 interrupted, 2 failed, 0 lost, 0 unknown" in text, text
    bad = next(line for line in text.splitlines() if CHAIN[0] in line)
    assert "failed" in bad and "continuous actions" in bad.split("failed", 1)[1], bad  # the error line, not just a state

    out = joblib_sweep / "report"
    assert report.main([str(root), "--out", str(out), "--reps", "200"]) == 0  # python -m mbrl.report
    assert "reading runs: 6/6" in capsys.readouterr().err
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
    failed = md.split("## Failed or unfinished runs", 1)[1]
    assert all(n in failed for n in CHAIN) and "continuous actions" in failed


def _same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert [s for s, _ in a[k]] == [s for s, _ in b[k]], k
        assert all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-6) for (_, x), (_, y) in zip(a[k], b[k])), k


def _uninterrupted(tmp_path: Path) -> Path:
    """The preempted job's run, straight through, in this process (the CLI's composition and build)."""
    from mbrl.config import check_values, compose
    from mbrl.train import build

    overrides = ["sweep=smoke", "env=toy/point", "seed=0", *SHORT]
    cfg = compose(overrides)
    check_values(cfg, overrides)
    run = tmp_path / "straight"
    run.mkdir()
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(int(cfg.threads))  # as mbrl.train.run does (the preset: 1)
    try:
        build(cfg, run).run()
    finally:
        torch.set_num_threads(threads)
    return run


def _rows(run: Path, key: str) -> list[tuple[int, str]]:
    return [(int(r["step"]), r["value"]) for r in csv.DictReader(open(run / "metrics.csv")) if r["key"] == key]


def test_submitit_preempted_job_requeues_and_resumes(submitit_sweep, tmp_path):
    """submitit_local: the job sent SIGUSR1 checkpointed, was requeued by submitit and resumed to the counters,
    evaluations and episode returns of an uninterrupted run; every job's wandb offline files (the preempted
    one: one per attempt) hold exactly tensorboard's scalars, grouped under the sweep's name."""
    root = _sweep_dir(submitit_sweep)
    assert sorted(p.name for p in root.iterdir()) == NAMES
    st = json.loads((root / PREEMPTED / "status.json").read_text())
    assert st["state"] == "done" and st["attempts"] == 2, st  # preempted once, requeued, finished
    others = [json.loads((root / n / "status.json").read_text()) for n in NAMES if n != PREEMPTED]
    assert all(o["state"] == "done" and o["attempts"] == 1 for o in others)
    logs = "".join(p.read_text() for p in (submitit_sweep / "runs" / ".multirun").rglob(f"{st['job_id']}_0_log.err"))
    assert "SIGUSR1" in logs and "preempted" in logs and "resuming from" in logs, logs[-2000:]
    straight = _uninterrupted(tmp_path)
    import torch

    counters = torch.load(straight / "checkpoints" / "latest.pt", weights_only=False)["counters"]
    assert (st["env_steps"], st["updates"]) == (counters["env_steps"], counters["updates"]) == (250, 150)
    for key in ("eval/return", "train/return"):
        assert _rows(root / PREEMPTED, key) == _rows(straight, key), key

    pytest.importorskip("wandb")
    from mbrl.utils.trackers import read_tensorboard, read_wandb_offline

    for name in NAMES:
        run = root / name
        tb = read_tensorboard(run)
        assert {"eval/return", "sac/critic_loss"} | ({"train/return"} if "toy" in name else set()) <= set(tb), sorted(tb)
        _same(read_wandb_offline(run), tb)
    assert len(list((root / PREEMPTED).glob("wandb/offline-run-*"))) == 2  # one per attempt, the same run id
    assert all("group: smoke" in (root / n / "config.yaml").read_text() for n in NAMES)


def test_launcher_and_logger_bad_input(tmp_path, capsys):
    """One line each, before hydra starts (the CLI prints these UserErrors as `error: ...`, exit 2)."""
    from mbrl import sweep
    from mbrl.config import validate_overrides
    from mbrl.errors import UserError
    from mbrl.utils.trackers import check

    with pytest.raises(UserError, match=r"unknown launcher 'nope'; valid: basic, joblib, ray, submitit_local, submitit_slurm$"):
        validate_overrides(["--multirun", "sweep=smoke", "launcher=nope"])
    with pytest.raises(UserError, match=r"launcher has no keys of its own; set hydra.launcher.<key> instead"):
        validate_overrides(["--multirun", "sweep=smoke", "launcher.n_jobs=2"])
    with pytest.raises(UserError, match=r"logger='neptune' is not a tracker; valid: wandb, mlflow, null"):
        check("neptune")
    assert check("null") is None and check("wandb") == "wandb"
    assert sweep.main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert sweep.job_name(["sweep=smoke", "launcher=joblib", "env=dmc/cartpole-swingup", "++algo.lr=3e-4", "progress=false"], 4) == \
        "algo.lr=3e-4,env=dmc-cartpole-swingup,seed=4"


def test_submitit_slurm_keys_make_the_sbatch_script(tmp_path):
    """The keys of configs/launcher/submitit_slurm.yaml are submitit's SLURM parameters and give the sbatch lines they
    say, in the script submitit writes for sbatch (SLURM itself is not on these machines, so nothing is submitted): the
    params go to submitit's AutoExecutor the way hydra-submitit's launcher passes them, in a fresh process where
    mbrl's preemption signal (USR1) is set before submitit is imported, as in `mbrl.train.main`."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose as hcompose, initialize_config_dir
    from omegaconf import OmegaConf

    from mbrl.config import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hcompose("config", ["sweep=smoke", "launcher=submitit_slurm", "hydra.launcher.partition=gpu",
                                  "hydra.launcher.array_parallelism=3", "hydra.launcher.timeout_min=90"], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert params["_target_"].endswith("SlurmLauncher")
    code = f"""
import json, sys
from mbrl.sweep import set_preemption_signal
set_preemption_signal()  # as mbrl.train.main does, before anything imports submitit
import submitit
from omegaconf import OmegaConf
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
params = json.loads(sys.argv[1])
base = set(OmegaConf.structured(BaseQueueConf).keys())
ex = submitit.AutoExecutor(cluster="slurm", folder=sys.argv[2], slurm_max_num_timeout=params.pop("max_num_timeout"))
params = {{k if k in base else "slurm_" + k: v for k, v in params.items() if k not in ("submitit_folder", "_target_")}}
params["name"] = "mbrl"
ex.update_parameters(**params)
ex._executor.parameters["map_count"] = 4
print(ex._executor._make_submission_file_text("python -m x", "uid"))
"""
    # submitit refuses to build a SLURM executor unless `srun` is on PATH: an empty one there (never run)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    env = _env()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.pop("SUBMITIT_PREEMPT_SIGNAL", None)
    res = subprocess.run([sys.executable, "-c", code, json.dumps(params), str(tmp_path)], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    text = res.stdout
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32GB",
                 "#SBATCH --time=90", "#SBATCH --array=0-3%3", "#SBATCH --signal=USR1@120"):
        assert line in text, (line, text)


def test_status_of_killed_and_unknown_runs(tmp_path, monkeypatch):
    """A `running` status whose process is gone reads `lost` (a re-run resumes it); one whose process lives is
    `running` and a re-run leaves it alone; a dir without status.json is `unknown`."""
    from mbrl import sweep

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    for name, pid in (("env=a,seed=0", int(gone)), ("env=b,seed=0", os.getppid())):
        monkeypatch.setattr(os, "getpid", lambda pid=pid: pid)
        sweep.write_status(tmp_path / name, "running")
    monkeypatch.undo()
    (tmp_path / "env=c,seed=0").mkdir()
    (tmp_path / "env=c,seed=0" / "config.yaml").write_text("env: toy/point\nsteps: 10\n")
    rows = {r["run"]: r for r in sweep.summarize(tmp_path)}
    assert {k: r["state"] for k, r in rows.items()} == {"env=a,seed=0": "lost", "env=b,seed=0": "running", "env=c,seed=0": "unknown"}
    assert rows["env=a,seed=0"]["attempts"] == 1 and rows["env=c,seed=0"]["steps"] == 10
    assert not sweep.alive(sweep.read_status(tmp_path / "env=a,seed=0")) and sweep.alive(sweep.read_status(tmp_path / "env=b,seed=0"))


def test_report_bad_input(cli, tmp_path):
    res = cli("mbrl.report", str(tmp_path / "nope"))
    assert res.returncode == 2 and res.stderr.strip().startswith("error:") and len(res.stderr.strip().splitlines()) == 1
    res = cli("mbrl.report", str(tmp_path))
    assert res.returncode == 2 and "no run directories" in res.stderr


@pytest.mark.ray
@pytest.mark.skipif(not os.environ.get("MBRL_TEST_RAY"), reason="starts a local Ray cluster: MBRL_TEST_RAY=1 pytest -m ray tests/test_sweeps.py")
def test_ray_sweep(cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    res = cli("mbrl.train", "--multirun", "sweep=smoke", "launcher=ray", "env=toy/point", *SHORT, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    root = _sweep_dir(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == NAMES[2:]
    assert all(json.loads((root / n / "status.json").read_text())["state"] == "done" for n in NAMES[2:])
