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


# ------------------------------------------------------------------------------------------ paper settings per dataset
# (rollout horizon, penalty) from OfflineRL-Kit's run_mopo.py / run_mobile.py "suggested hypers" (the D4RL v2 tables)
PAPER = {
    ("mopo", "hopper-medium-replay"): (5, 2.5), ("mopo", "halfcheetah-medium-replay"): (5, 0.5), ("mopo", "hopper-medium"): (5, 5.0),
    ("mopo", "halfcheetah-medium"): (5, 0.5), ("mopo", "walker2d-medium-replay"): (1, 2.5),
    ("mobile", "hopper-medium-replay"): (5, 0.1), ("mobile", "halfcheetah-medium-replay"): (5, 0.1), ("mobile", "hopper-medium"): (5, 1.5),
    ("mobile", "halfcheetah-medium"): (5, 0.5), ("mobile", "walker2d-medium-expert"): (1, 1.5),
}


def sweep_envs() -> list[str]:
    from omegaconf import OmegaConf

    from mbrl.config import CONFIG_DIR

    return str(OmegaConf.load(CONFIG_DIR / "sweep" / "d4rl.yaml").hydra.sweeper.params.env).split(",")


@pytest.mark.parametrize("algo", ["mopo", "mobile"])
def test_sweep_d4rl_picks_up_paper_settings(algo):
    """Every env of `sweep=d4rl`, composed as its multirun job is: the algo's per-dataset horizon and penalty
    from the paper's table, the shared paper settings (ensemble 7 / 5 elites, 5% real data, SAC alpha 0.2)."""
    from mbrl.config import compose, dataset_key

    envs = sweep_envs()
    assert len(envs) == 15 and "d4rl/hopper-medium-replay-v5" in envs
    seen = 0
    for env in envs:
        cfg = compose(["sweep=d4rl", f"algo={algo}", f"env={env}"])
        assert cfg.model.ensemble_size == 7 and cfg.model.num_elites == 5 and cfg.algo.real_ratio == 0.05
        assert cfg.learner.init_alpha == 0.2 and cfg.learner.actor_lr == 1e-4 and cfg.algo.rollout_batch == 50000
        want = PAPER.get((algo, dataset_key(env)))
        if want:
            seen += 1
            assert (cfg.algo.rollout_horizon, cfg.algo.penalty_coef) == want, (env, cfg.algo.rollout_horizon, cfg.algo.penalty_coef)
    assert seen == 5
    # D4RL's own v2 names get the same settings; the user's keys win over the table
    v2 = compose([f"algo={algo}", "env=d4rl/hopper-medium-replay-v2"])
    assert (v2.algo.rollout_horizon, v2.algo.penalty_coef) == PAPER[(algo, "hopper-medium-replay")]
    mine = compose([f"algo={algo}", "env=d4rl/hopper-medium-replay-v5", "algo.penalty_coef=7", "algo.rollout_horizon=3"])
    assert (mine.algo.rollout_horizon, mine.algo.penalty_coef) == (3, 7)


def test_dataset_settings_reach_other_groups():
    """A `learner.` key of a dataset entry goes to the learner (MOBILE hopper-medium: alpha fixed), RAVL's Q
    ensemble of 10 and CQL's 3-layer networks come from their papers."""
    from mbrl.config import compose

    assert compose(["algo=mobile", "env=d4rl/hopper-medium-v5"]).learner.learn_alpha is False
    assert compose(["algo=mobile", "env=d4rl/hopper-medium-v5", "learner.learn_alpha=true"]).learner.learn_alpha is True
    assert compose(["algo=mobile", "env=d4rl/halfcheetah-medium-v5"]).learner.learn_alpha is True
    ravl = compose(["algo=ravl", "env=d4rl/hopper-medium-replay-v5"])
    assert ravl.learner.num_q == 10 and ravl.learner.init_alpha == 0.1 and ravl.algo.penalty_coef == 0.0
    assert compose(["algo=cql", "env=d4rl/hopper-medium-v5"]).learner.layers == 3


# ------------------------------------------------------------------------------------------ the edge-of-reach oracle
def test_oracle_is_the_true_simulator():
    """model=oracle on gym/Hopper-v5: a state set from the observation, stepped by the simulator, gives the
    env's own next observation, reward and termination; a perfect model's signals are zero."""
    import gymnasium as gym
    import torch

    import mbrl.models as models

    env = gym.make("Hopper-v5")
    model = models.build({"name": "oracle", "env": "gym/Hopper-v5"}, env.observation_space, env.action_space, seed=0)
    assert not list(model.parameters()) and model.signals >= {"aleatoric", "disagreement", "members"}
    obs, _ = env.reset(seed=3)
    rng = np.random.default_rng(0)
    rows, acts, nxt, rew, term = [], [], [], [], []
    for _ in range(40):
        a = rng.uniform(-1, 1, 3).astype(np.float32)
        o2, r, te, tr, _ = env.step(a)
        rows.append(obs); acts.append(a); nxt.append(o2); rew.append(r); term.append(te)
        obs = o2 if not (te or tr) else env.reset()[0]
    state = model.observe(torch.tensor(np.array(rows)).unsqueeze(1), torch.tensor(np.array(acts)).unsqueeze(1),
                          torch.ones(40, 1, dtype=torch.bool))[:, 0]
    a = torch.tensor(np.array(acts))
    sig = model.uncertainty(state, a, ["aleatoric", "disagreement", "members"])
    s1 = model.step(state, a)
    np.testing.assert_allclose(s1.obs.numpy(), np.array(nxt), atol=1e-5)
    np.testing.assert_allclose(model.reward(s1).numpy(), np.array(rew), atol=1e-4)
    np.testing.assert_array_equal(model.cont(s1).numpy() == 0, np.array(term))
    assert float(sig["aleatoric"].abs().max()) == 0 and float(sig["disagreement"].abs().max()) == 0
    np.testing.assert_allclose(sig["members"].features.std(0).numpy(), 0.0)
    from mbrl.errors import UserError

    with pytest.raises(UserError) as e:
        models.build({"name": "oracle", "env": "gym/Pendulum-v1"}, env.observation_space, env.action_space)
    assert "state can be set" in str(e.value)


@pytest.mark.parametrize("algo", ["mopo", "ravl"])
def test_oracle_path_offline(algo, replay, tmp_path):
    """`model=oracle algo=mopo|ravl` on a collected toy/point file: the simulator is the dataset's env (filled
    in), there is no model fit, and every imagined transition is the true env's."""
    import torch

    from mbrl.envs.toy import PointEnv
    from mbrl.config import compose
    from mbrl.train import build

    cfg = compose(["env=d4rl/point-medium-replay", f"dataset_path={replay[0]}", "model=oracle", f"algo={algo}", "steps=30", "eval_every=0",
                   "eval_episodes=1", "checkpoint_every=0", "progress=false", "tensorboard=false", "algo.rollout_batch=64",
                   "algo.rollout_every=10", "learner.hidden=16"])
    a = build(cfg, tmp_path)
    assert cfg.model.env == "toy/point" and a.fitter is None and "model_fit" not in a.modules()
    m = a.run()
    assert np.isfinite(m["eval/return"]) and len(a.dyna.imagined) > 0
    b = a.dyna.imagined.sample(32)
    env = PointEnv()
    for o, act, r, n in zip(b.obs.numpy(), b.action.numpy(), b.reward.numpy(), b.next_obs.numpy()):
        env.pos, env.goal, env._t = o[:2].astype(np.float64), o[2:].astype(np.float64), 0
        o2, r2, *_ = env.step(act)
        np.testing.assert_allclose(n, o2, atol=1e-6)
        assert abs(r - r2) < 1e-5  # no penalty: the true model's uncertainty is zero
    assert (tmp_path / "checkpoints" / "latest.pt").is_file()
    torch.load(tmp_path / "checkpoints" / "latest.pt", weights_only=False)
