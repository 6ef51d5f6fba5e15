"""`python -m mbrl.bench offline`: our IQL / CQL / TD3+BC beside d3rlpy's on the same HDF5 file. Here: our side on a
tiny collected toy/point file (the table, the per-job cache a later call reuses), the settings handed to d3rlpy
read from our composed configs, the refusals; d3rlpy's side only where its venv was made (`.bench_venvs/d3rlpy`)."""
from __future__ import annotations

import json

import pytest

from mbrl.bench.__main__ import main as bench
from mbrl.bench.offline import ALGOS, compose_job, d3rlpy_settings
from mbrl.bench.peers import VENVS
from mbrl.collect import main as collect

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench_offline")
    args = ["env=toy/point", "kind=medium-replay", "train_steps=500", "hidden=32", "prefill=200", "eval_every=250", "eval_episodes=2",
            "ref_episodes=2", "ref_max=-5", "progress=false", "threads=1", f"out={d}/"]
    assert collect(args) == 0
    return d / "point-medium-replay.hdf5"


def test_ours_writes_the_table_and_reuses_finished_jobs(dataset, tmp_path, capsys):
    out, work = tmp_path / "offline.md", tmp_path / "work"
    args = ["offline", "--datasets", str(dataset), "--algos", "iql,td3bc", "--libraries", "mbrl", "--steps", "150", "--eval-episodes", "2",
            "--work", str(work)]
    assert bench([*args, "--out", str(out)]) == 0
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| point-medium-replay |")]
    assert [r.split("|")[2].strip() for r in rows] == ["iql", "td3bc"], text
    for r in rows:
        cells = [c.strip() for c in r.split("|")[1:-1]]
        float(cells[2])  # our normalised score (the file has ref_min / ref_max)
        assert cells[3] == "-" and float(cells[4]) > 0 and cells[5] == "-"  # no d3rlpy column in an ours-only call
        assert float(cells[7]) > 0 and float(cells[8]) > float(cells[4])  # the FLOP floor: the peak bound lies above what ran
    recs = json.loads(out.with_suffix(".json").read_text())
    assert {(r["library"], r["algo"], r["steps"]) for r in recs} == {("mbrl", "iql", 150), ("mbrl", "td3bc", 150)}
    assert len(list(work.glob("*.json"))) == 2
    capsys.readouterr()
    assert bench([*args, "--out", str(tmp_path / "again.md")]) == 0  # the finished jobs are read back, not rerun
    assert capsys.readouterr().out.count(": reused ") == 2
    assert json.loads((tmp_path / "again.json").read_text()) == recs


@pytest.mark.parametrize("algo", ALGOS)
def test_d3rlpy_gets_our_settings(algo, dataset, tmp_path):
    """The peer is configured from our composed config of the same algo: widths, depths, rates and the method's coefficients."""
    cfg = compose_job(dataset, algo, 0, 1000, 2, 1, tmp_path / "run")
    s, lc = d3rlpy_settings(cfg), cfg.learner
    assert s["units"] == [int(lc.hidden)] * int(lc.layers) and s["batch_size"] == int(cfg.algo.batch_size)
    assert (s["gamma"], s["tau"], s["critic_learning_rate"]) == (float(lc.gamma), float(lc.tau), float(lc.lr))
    if algo == "iql":
        assert (s["expectile"], s["weight_temp"], s["max_weight"]) == (float(lc.expectile), float(lc.beta), float(lc.max_weight))
    if algo == "cql":
        assert (s["conservative_weight"], s["n_action_samples"], s["actor_learning_rate"]) == (float(lc.cql_weight), int(lc.num_samples), float(lc.actor_lr))
        assert s["alpha_learning_rate"] == 0.0 and s["soft_q_backup"] is False  # fixed conservative weight, deterministic backup
    if algo == "td3bc":
        assert (s["alpha"], s["update_actor_interval"], s["target_smoothing_sigma"]) == (float(lc.alpha), int(lc.actor_every), float(lc.policy_noise))


@pytest.mark.parametrize("args, needle", [
    (["--algos", "iql,sac"], "--algos: unknown sac; valid: iql, cql, td3bc"),
    (["--libraries", "torchrl"], "--libraries: unknown torchrl; valid: mbrl, d3rlpy"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--seeds", "a"], "--seeds must be comma-separated integers"),
])
def test_refusals_are_one_line(args, needle, dataset, tmp_path, capsys):
    assert bench(["offline", "--datasets", str(dataset), "--work", str(tmp_path), "--out", str(tmp_path / "x.md"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "x.md").exists()


def test_missing_dataset_is_one_line(tmp_path, capsys):
    assert bench(["offline", "--datasets", str(tmp_path / "nope.hdf5"), "--out", str(tmp_path / "x.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such file" in err[0] and "mbrl.collect" in err[0], err


@pytest.mark.skipif(not (VENVS / "d3rlpy" / ".installed").exists(), reason="d3rlpy's venv is made by the first `bench offline` call")
def test_d3rlpy_side_runs_and_is_evaluated_by_our_code(dataset, tmp_path):
    out = tmp_path / "peer.md"
    assert bench(["offline", "--datasets", str(dataset), "--algos", "td3bc", "--libraries", "mbrl,d3rlpy", "--steps", "100",
                  "--eval-episodes", "2", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    recs = {r["library"]: r for r in json.loads(out.with_suffix(".json").read_text())}
    assert recs["d3rlpy"]["version"] == "2.8.1" and recs["d3rlpy"]["steps_per_s"] > 0
    assert isinstance(recs["d3rlpy"]["score"], float) and isinstance(recs["mbrl"]["score"], float)
    assert "x |" in [r for r in out.read_text().splitlines() if r.startswith("| point-medium-replay | td3bc |")][0]  # the speed ratio
