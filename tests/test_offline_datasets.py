"""Datasets as D4RL defines them, written by `python -m mbrl.collect` (tiny budgets on toy/point):
collector options and refusals, medium-replay saving its policy and starting from an existing run's
replay buffer, the one-command `kind=all`, and the per-dataset paper settings that `sweep=d4rl` picks up."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from mbrl.collect import main
from mbrl.data.offline import load_d4rl

pytestmark = pytest.mark.usefixtures("one_thread")

# a tiny inline SAC: 32 units, 200 random steps, evaluations every 300 env steps
SAC = ["hidden=32", "prefill=200", "eval_every=300", "eval_episodes=2", "ref_episodes=2", "progress=false", "threads=1"]


def run(capsys, *args: str) -> tuple[int, str]:
    rc = main(list(args))
    return rc, capsys.readouterr().err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    """toy/point medium-replay: 600 env steps of an inline SAC, its policy saved beside the file."""
    d = tmp_path_factory.mktemp("replay")
    assert main(["env=toy/point", "kind=medium-replay", "train_steps=600", f"out={d}/", *SAC]) == 0
    return d / "point-medium-replay.hdf5", d / "point-medium-replay.policy"


def test_medium_replay_saves_policy_and_buffer(replay):
    path, policy = replay
    ds = load_d4rl(path)
    assert len(ds) == 600 and ds.metadata["kind"] == "medium-replay" and ds.metadata["train_env_steps"] == 600
    assert (policy / "config.yaml").is_file() and (policy / "checkpoints" / "latest.pt").is_file()
    assert len(list((policy / "checkpoints").glob("buffer_600.npz"))) == 1
    # the stream is the training run: the first `prefill` actions are uniform, episodes are 50 steps
    assert ds.truncated.sum() == 12 and not ds.terminated.any()
    inner = ~ds.truncated[:-1]
    np.testing.assert_array_equal(ds.obs[1:][inner], ds.next_obs[:-1][inner])
    assert not list(path.parent.glob("*.tmp")) and not list(path.parent.glob(".*tmp*"))


def test_medium_replay_from_existing_buffer(replay, tmp_path, capsys):
    """replay_from= a saved run: train_steps=0 gives exactly that run's replay; more steps extend it
    (the old transitions first, then the continued training run's)."""
    path, policy = replay
    old = load_d4rl(path)
    rc, err = run(capsys, "env=toy/point", "kind=medium-replay", "train_steps=0", f"replay_from={policy}", f"out={tmp_path}/same.hdf5", *SAC)
    assert rc == 0, err
    same = load_d4rl(tmp_path / "same.hdf5")
    np.testing.assert_array_equal(same.obs, old.obs)
    np.testing.assert_array_equal(same.action, old.action)
    np.testing.assert_array_equal(same.truncated, old.truncated)
    rc, err = run(capsys, "env=toy/point", "kind=medium-replay", "train_steps=300", f"replay_from={policy}", f"out={tmp_path}/more.hdf5", *SAC)
    assert rc == 0, err
    more = load_d4rl(tmp_path / "more.hdf5")
    assert len(more) == 900 and more.metadata["train_env_steps"] == 900  # counters continue from the run's 600
    np.testing.assert_array_equal(more.obs[:600], old.obs)
    assert (tmp_path / "more.policy" / "checkpoints" / "buffer_900.npz").is_file()
    # the saved policy acts as `policy=` for kind=medium
    rc, err = run(capsys, "env=toy/point", "kind=medium", f"policy={tmp_path / 'more.policy'}", "steps=100", f"out={tmp_path}/m.hdf5", *SAC)
    assert rc == 0, err
    assert len(load_d4rl(tmp_path / "m.hdf5")) == 100


def test_medium_stops_at_target_return(tmp_path, capsys):
    """policy=train stops at the first evaluation reaching target_return (any policy beats -1000)."""
    rc, err = run(capsys, "env=toy/point", "kind=medium", "policy=train", "train_steps=3000", "target_return=-1000", "steps=100",
                  f"out={tmp_path}/m.hdf5", *SAC)
    assert rc == 0, err
    ds = load_d4rl(tmp_path / "m.hdf5")
    assert ds.metadata["train_env_steps"] == 300 and ds.metadata["target_return"] == -1000 and len(ds) == 100


def test_out_folder_overwrite_and_progress(tmp_path, capsys):
    out = tmp_path / "data"
    out.mkdir()
    rc, err = run(capsys, "env=toy/point", "kind=random", "steps=60", f"out={out}", "progress=true")
    assert rc == 0, err
    assert "collect" in err and "60/60" in err  # the progress bar
    assert sorted(p.name for p in out.iterdir()) == ["point-random.hdf5"]  # no data.tmp beside it
    rc, err = run(capsys, "env=toy/point", "kind=random", "steps=60", f"out={out}")
    assert "exists; pass overwrite=true" in one_error_line(err) and rc == 2
    rc, err = run(capsys, "env=toy/point", "kind=random", "steps=80", f"out={out}", "overwrite=true", "progress=false")
    assert rc == 0 and len(load_d4rl(out / "point-random.hdf5")) == 80
    assert sorted(p.name for p in out.iterdir()) == ["point-random.hdf5"]


def test_pixel_observations_stay_uint8(tmp_path, capsys):
    rc, err = run(capsys, "env=toy/point-pixels", "kind=random", "steps=20", f"out={tmp_path}/px.hdf5", "progress=false")
    assert rc == 0, err
    with h5py.File(tmp_path / "px.hdf5") as f:
        assert f["observations"].dtype == np.uint8 and f["observations"].shape == (20, 3, 64, 64)
        assert f["next_observations"].dtype == np.uint8


@pytest.mark.parametrize("args,needle", [
    (["kind=random", "steps=0"], "steps=0; valid: an integer >= 1"),
    (["kind=random", "steps=abc"], "steps=abc; valid: an integer"),
    (["kind=random", "overwrite=maybe"], "overwrite=maybe; valid: true or false"),
    (["kind=bogus"], "unknown kind 'bogus'"),
    (["kind=medium"], "needs a policy"),
    (["kind=medium-expert", "parts=a.hdf5"], "two or more"),
    (["kind=medium", "policy=/nonexistent"], "not a SAC run dir"),
])
def test_collect_refusals(args, needle, tmp_path, capsys):
    rc, err = run(capsys, "env=toy/point", f"out={tmp_path}/x.hdf5", *args)
    assert rc == 2 and needle in one_error_line(err), err
    assert not list(tmp_path.iterdir())


def test_policy_from_another_env(replay, tmp_path, capsys):
    rc, err = run(capsys, "env=gym/Pendulum-v1", "kind=medium", f"policy={replay[1]}", "steps=10", f"out={tmp_path}/x.hdf5")
    assert rc == 2 and "a policy for env=toy/point, not env=gym/Pendulum-v1" in one_error_line(err)
    assert not list(tmp_path.iterdir())


def test_all_kinds_in_one_command(tmp_path, capsys):
    """kind=all: expert SAC, a second run stopped at 1/3 of the expert's return (medium-replay, medium),
    medium-expert = medium + expert, random; one reference pair (random, expert return) for all."""
    rc, err = run(capsys, "env=toy/point", "kind=all", "expert_train_steps=600", "train_steps=600", "steps=100", f"out={tmp_path}/", *SAC)
    assert rc == 0, err
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([f"point-{k}.hdf5" for k in ("expert", "medium", "medium-replay", "medium-expert", "random")] +
                           ["point-expert.policy", "point-medium.policy"]), names
    sets = {k: load_d4rl(tmp_path / f"point-{k}.hdf5") for k in ("expert", "medium", "medium-replay", "medium-expert", "random")}
    assert len(sets["medium-expert"]) == len(sets["medium"]) + len(sets["expert"]) == 200
    np.testing.assert_array_equal(sets["medium-expert"].obs[:100], sets["medium"].obs)
    np.testing.assert_array_equal(sets["medium-expert"].obs[100:], sets["expert"].obs)
    refs = {s.ref_scores for s in sets.values()}
    assert len(refs) == 1
    lo, hi = refs.pop()
    mr = sets["medium-replay"].metadata
    assert mr["target_return"] == pytest.approx(lo + (hi - lo) / 3)
    assert len(sets["medium-replay"]) == mr["train_env_steps"] <= 600
    assert all(e[1] < mr["target_return"] for e in json.loads(mr["train_evals"])[:-1])  # stopped at the first eval reaching it
