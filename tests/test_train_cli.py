"""The command line: smoke runs, multirun, bad-input errors, resume, plot, evaluate."""
import csv
import json

import numpy as np

import pytest

from conftest import run_cli
from pathlib import Path

PLANNERS = Path(__file__).resolve().parents[1] / "configs" / "planner"

FAST = ["env=toy/point", "steps=600", "algo=sac", "algo.prefill=200", "algo.batch_size=64", "eval_every=300",
        "eval_episodes=2", "log_every=200", "checkpoint_every=300", "progress=false", "algo.buffer_size=5000",
        "learner.hidden=64", "threads=1"]


def _read_metrics(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Two seeds of a tiny SAC run through the CLI, shared by the tests below."""
    root = tmp_path_factory.mktemp("smoke")
    runs = []
    for seed in (0, 1):
        d = root / "runs" / "sac" / "toy" / f"point_seed{seed}"
        r = run_cli("mbrl.train", *FAST, f"seed={seed}", f"run_dir={d}")
        assert r.returncode == 0, r.stderr[-3000:]
        runs.append((d, r))
    return runs


def test_smoke_run_writes_run_dir(smoke_runs):
    run, r = smoke_runs[0]
    assert (run / "config.yaml").is_file()
    assert (run / "command.txt").read_text().split() == ["python", "-m", "mbrl.train", *FAST, "seed=0", f"run_dir={run}"]
    assert (run / "checkpoints" / "latest.pt").is_file()
    assert list((run / "tb").glob("events.out.tfevents.*")), "no tensorboard events"
    rows = _read_metrics(run)
    keys = {r["key"] for r in rows}
    assert {"eval/return", "train/return", "sac/critic_loss", "time/steps_per_s"} <= keys
    evals = [int(r["step"]) for r in rows if r["key"] == "eval/return"]
    assert evals == [300, 600]
    assert "done: 600 env steps" in r.stdout


def test_multirun_seeds_default_run_dirs(tmp_path):
    r = run_cli("mbrl.train", "--multirun", *FAST, "steps=250", "eval_every=250", "checkpoint_every=0", "seed=0,1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = sorted(p for p in (tmp_path / "runs" / "sac" / "toy" / "point").iterdir())
    assert len(runs) == 2 and all((d / "metrics.csv").is_file() for d in runs)
    seeds = sorted(int(next(l for l in (d / "config.yaml").read_text().splitlines() if l.startswith("seed:")).split()[1]) for d in runs)
    assert seeds == [0, 1]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["env=nosuite/foo"], "valid suites: gym, dmc, atari, toy"),
        (["env=gym/NoSuchEnv-v9"], "NoSuchEnv-v9"),
        (["env=toy/nope"], "valid: "),
        (["model=nomodel"], "unknown model 'nomodel'; valid:"),
        (["algo=noalgo"], "unknown algo 'noalgo'; valid: "),
        (["stepz=10"], "unknown key 'stepz'; valid: "),
        (["algo=sac", "algo.batchsize=3"], "unknown key 'algo.batchsize' for algo=sac; valid: "),
        (["model=rssm", "algo.batchsize=3"], "unknown key 'algo.batchsize' for algo=dreamer; valid: "),
        (["model.size=XS"], "no model is named or implied"),
        (["model=rssm", "algo=sac"], "algo=sac uses no model; drop model=rssm (algos with a model: dreamer, mbpo"),
        (["algo=sac", "planner=cem"], "algo=sac uses no planner"),
        (["planner=cme"], "unknown planner 'cme'; valid: " + ", ".join(sorted(p.stem for p in PLANNERS.glob("*.yaml")))),
        (["algo=pets", "planner=cem", "planner.populaton=3"], "unknown key 'planner.populaton' for planner=cem; valid: "),
        (["algo=mbpo", "learner=sac", "learner.hiden=3"], "unknown key 'learner.hiden' for learner=sac; valid: "),
        (["env=toy/point", "model=rssm", "algo=mopo", "dataset_path=x"], "is offline and needs a dataset"),
    ],
)
def test_bad_input_one_line_error(args, expected, tmp_path):
    r = run_cli("mbrl.train", *args, cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and expected in err, err


def test_implied_algo_takes_its_keys():
    """`model=rssm algo.x=...` sets keys of the algo the model implies (dreamer), `algo.x=...` alone
    those of the default algo; the implied choice is handed to hydra."""
    from mbrl.train import validate_overrides

    assert validate_overrides(["env=dmc/cartpole-swingup", "model=rssm", "algo.precision=bf16"]) == ["algo=dreamer"]
    assert validate_overrides(["algo.batch_size=3"]) == ["algo=sac"]
    assert validate_overrides(["model=rssm"]) == []  # nothing to add: compose() fills the algo in
    assert validate_overrides(["algo=pets", "model.hidden=64"]) == ["model=ensemble"]
    assert validate_overrides(["algo=pets", "planner.population=64"]) == ["planner=icem"]
    assert validate_overrides(["algo=mbpo", "learner.hidden=64"]) == ["learner=sac"]
    # a multirun whose jobs imply different groups: nothing is added (each job loads its own, keys go on top)
    assert validate_overrides(["algo=iql,mopo", "learner.hidden=24", "model.hidden=16"]) == []
    with pytest.raises(Exception, match="unknown key 'learner.hiden' for learner=iql"):
        validate_overrides(["algo=iql,mopo", "learner.hiden=24"])


def test_resume_continues_counters_and_buffer(tmp_path):
    """A run stopped at 225 steps and resumed to 450 ends with the same counters as an
    uninterrupted 450-step run, and the resumed buffer starts as the saved one."""
    import torch

    base = FAST + ["steps=450", "eval_every=225", "checkpoint_every=225"]
    full = tmp_path / "full"
    r = run_cli("mbrl.train", *base, f"run_dir={full}")
    assert r.returncode == 0, r.stderr[-3000:]
    part = tmp_path / "part"
    r = run_cli("mbrl.train", *base, "steps=225", f"run_dir={part}")
    assert r.returncode == 0, r.stderr[-3000:]
    saved = torch.load(part / "checkpoints" / "latest.pt", weights_only=False)
    assert saved["counters"]["env_steps"] == 225
    from mbrl.data import ReplayBuffer

    buf_at_cut = ReplayBuffer.load(part / "checkpoints" / saved["buffer_file"])
    n_at_cut = len(buf_at_cut)
    r = run_cli("mbrl.train", f"resume={part}", "steps=450")
    assert r.returncode == 0, r.stderr[-3000:]
    a = torch.load(full / "checkpoints" / "latest.pt", weights_only=False)
    b = torch.load(part / "checkpoints" / "latest.pt", weights_only=False)
    for k in ("env_steps", "updates", "update_budget", "next_eval", "next_ckpt"):
        assert a["counters"][k] == b["counters"][k], k
    assert [s for s, _ in a["counters"]["eval_history"]] == [s for s, _ in b["counters"]["eval_history"]] == [225, 450]
    buf_full = ReplayBuffer.load(full / "checkpoints" / a["buffer_file"])
    buf_res = ReplayBuffer.load(part / "checkpoints" / b["buffer_file"])
    sa, sb = buf_at_cut.state_dict()["arrays"], buf_res.state_dict()["arrays"]
    n = int(sa["count"][0])
    assert n > 225 and int(sb["count"][0]) > n
    for k in sa:
        if k in ("pos", "count"):
            continue
        # everything saved at the interruption is kept unchanged; the newest saved entry (an observation
        # whose action was not taken yet) is completed by the resumed run
        assert np.array_equal(sa[k][:, :n - 1], sb[k][:, :n - 1]), k
    # toy/point's envs are saved with the checkpoint (envs.snapshot_safe): 225 steps fall mid-episode
    # (episodes last 50) and the resumed run continues that episode instead of cutting it
    assert not sb["is_last"][0, n - 1] and not sb["is_first"][0, n]
    sf = buf_full.state_dict()["arrays"]
    for k in sf:  # ... so the resumed run's buffer is the uninterrupted run's
        assert np.array_equal(sf[k], sb[k]), k
    assert len(buf_res) == n_at_cut + 225 == len(buf_full)
    rows = _read_metrics(part)
    assert max(int(r["step"]) for r in rows) == 450


def test_interrupted_checkpoint_write_keeps_last_checkpoint(tmp_path):
    """Simulate a kill during a checkpoint write: the previous checkpoint stays loadable."""
    import os

    import torch

    from mbrl.utils.checkpoint import atomic_write, load_checkpoint, save_checkpoint

    path = tmp_path / "latest.pt"
    save_checkpoint({"step": 1}, path)

    def dies_mid_write(p):
        with open(p, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies_mid_write)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_plot_and_evaluate(smoke_runs, tmp_path):
    runs = [d for d, _ in smoke_runs]
    out = tmp_path / "curves.png"
    r = run_cli("mbrl.plot", *map(str, runs), "--label", "sac", "--label", "sac", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 5000 and out.read_bytes()[:4] == b"\x89PNG"
    r = run_cli("mbrl.evaluate", str(runs[0]), "--episodes", "3")
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads(r.stdout.strip().splitlines()[-1])
    assert m["env_steps"] == 600 and "eval/return" in m
    r = run_cli("mbrl.evaluate", str(tmp_path / "nope"))
    assert r.returncode == 2 and r.stderr.startswith("error: ")
    r = run_cli("mbrl.evaluate", str(runs[0]), "--episodes", "0")  # was NaN metrics, invalid JSON
    assert r.returncode == 2 and r.stderr.strip() == "error: --episodes 0; valid: an integer >= 1" and not r.stdout, r.stderr


def test_build_seeds_network_init():
    # `seed=` decides the initial weights of every network an algo builds
    import tempfile

    import torch

    from mbrl.train import build

    from mbrl.config import compose

    def weights(seed, global_seed):
        cfg = compose(["algo=sac", f"seed={seed}", "progress=false", "tensorboard=false"])
        torch.manual_seed(global_seed)  # the global RNG state before build must not matter
        with tempfile.TemporaryDirectory() as d:
            algo = build(cfg, d)
            return [p.detach().clone() for p in algo.learner.parameters()]

    a, b, c = weights(0, 123), weights(0, 124), weights(1, 125)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
