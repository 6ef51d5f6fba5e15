"""Sweeps end to end: `sweep=smoke` (2 tasks x 2 seeds) as a --multirun, then `python -m mbrl.report` on
it: the tables, the PNGs and the published baseline rows (dmc/cartpole-swingup: DreamerV3, TD-MPC2, SAC)."""
from __future__ import annotations

import csv

import pytest


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory):
    from conftest import run_cli

    cwd = tmp_path_factory.mktemp("sweep")
    res = run_cli("mbrl.train", "--multirun", "sweep=smoke", cwd=cwd, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return cwd


def test_smoke_sweep_and_report(smoke_sweep, cli):
    runs = sorted(p.parent for p in (smoke_sweep / "runs").rglob("config.yaml"))
    assert len(runs) == 4, runs
    out = smoke_sweep / "report"
    res = cli("mbrl.report", str(smoke_sweep / "runs"), "--out", str(out), "--reps", "200")
    assert res.returncode == 0, res.stderr
    assert "reading runs: 4/4" in res.stderr
    md = (out / "report.md").read_text()
    for name in ("curves_toy_point.png", "curves_dmc_cartpole-swingup.png", "aggregates_dmc.png", "profiles_dmc.png"):
        assert (out / name).stat().st_size > 5000, name
        assert name in md
    tasks = list(csv.DictReader(open(out / "tasks.csv")))
    mine = [t for t in tasks if t["published"] == "0"]
    assert {(t["env"], t["n"]) for t in mine} == {("toy/point", "2"), ("dmc/cartpole-swingup", "2")}
    published = {t["method"] for t in tasks if t["published"] == "1" and t["env"] == "dmc/cartpole-swingup"}
    assert {"DreamerV3", "TD-MPC2", "SAC (TD-MPC2 runs)"} <= published
    assert all(t["source"] for t in tasks)
    aggs = {(a["suite"], a["method"], a["metric"]) for a in csv.DictReader(open(out / "aggregates.csv"))}
    assert ("dmc", "sac", "iqm") in aggs and ("dmc", "DreamerV3", "optimality_gap") in aggs
    assert "| dmc/cartpole-swingup | DreamerV3 * |" in md


def test_report_bad_input(cli, tmp_path):
    res = cli("mbrl.report", str(tmp_path / "nope"))
    assert res.returncode == 2 and res.stderr.strip().startswith("error:") and len(res.stderr.strip().splitlines()) == 1
    res = cli("mbrl.report", str(tmp_path))
    assert res.returncode == 2 and "no run directories" in res.stderr
