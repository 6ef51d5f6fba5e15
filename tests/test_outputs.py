"""What a user looks at, read back from the files: plot labels and markers (PNG metadata and pixels),
evaluation videos (gif / mp4: frame count and size) for toy, gym, dmc and atari envs, world-model
videos (`evaluate --dream`, and the tensorboard `dream/openl` video Dreamer logs while training),
the load-and-act API (`mbrl.load`), and the guard that keeps committed results/ files.

Runs are real and tiny (in process, a few hundred env steps or less, no learning asked of them)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import ROOT, run_cli

FAST_SAC = ["algo.prefill=100", "algo.batch_size=32", "learner.hidden=32", "algo.buffer_size=2000", "log_every=100"]
TINY_ENSEMBLE = ["model.hidden=16", "model.layers=1", "model.ensemble_size=2", "model.num_elites=1", "algo.fit.max_updates=5",
                 "algo.fit.min_updates=1"]
TINY_RSSM = ["model.size=XS", "model.deter=32", "model.hidden=32", "model.depth=4", "model.layers=1", "model.stoch=4",
             "model.classes=4", "model.blocks=2", "model.bins=31"]


def _train(root: Path, name: str, overrides: list[str]) -> Path:
    """A run as `python -m mbrl.train` writes it (config.yaml, metrics.csv, tb/, checkpoints/)."""
    from mbrl.config import compose
    from mbrl.train import build

    run_dir = root / name
    run_dir.mkdir(parents=True)
    cfg = compose([*overrides, "progress=false", "threads=1"])
    OmegaConf.save(cfg, run_dir / "config.yaml")
    build(cfg, run_dir).run()
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("runs")
    r = {}
    # three algos on one env (the plot once merged them into one curve): sac with 3 evaluations,
    # mbpo and pets with a single (final) evaluation
    r["sac"] = _train(root, "sac", ["env=toy/point", "algo=sac", "steps=300", "eval_every=100", "eval_episodes=2", *FAST_SAC])
    r["mbpo"] = _train(root, "mbpo", ["env=toy/point", "algo=mbpo", "steps=150", "eval_every=0", "eval_episodes=1", "algo.prefill=100",
                                      "algo.rollout_batch=50", "algo.batch_size=32", "learner.hidden=32", "algo.train_ratio=1", *TINY_ENSEMBLE])
    r["pets"] = _train(root, "pets", ["env=toy/point", "algo=pets", "steps=110", "eval_every=0", "eval_episodes=1", "algo.prefill=100",
                                      "algo.horizon=3", "algo.particles=2", "planner.population=16", "planner.iterations=1", *TINY_ENSEMBLE])
    # Dreamer on 16x16 pixels, logging a world-model video every 5 updates
    r["dreamer"] = _train(root, "dreamer", ["env=toy/point-pixels", "+env_kwargs.size=16", "model=rssm", "algo=dreamer", "steps=260",
                                            "algo.prefill=200", "algo.batch_size=4", "algo.batch_length=12", "algo.train_ratio=24",
                                            "algo.video_every=5", "eval_every=0", "eval_episodes=1", "learner.horizon=3", *TINY_RSSM])
    return r


# ----------------------------------------------------------------------------------------- plot
def _png_curves(path: Path) -> tuple[dict, np.ndarray]:
    from PIL import Image

    from mbrl.plot import META_KEY

    im = Image.open(path)
    return json.loads(im.text[META_KEY]), np.asarray(im.convert("RGB"))


def test_plot_labels_by_algo_model_env_and_marks_single_evaluations(runs, tmp_path):
    from mbrl.plot import main

    out = tmp_path / "curves.png"
    assert main([str(runs[k]) for k in ("sac", "mbpo", "pets")] + ["--out", str(out)]) == 0
    meta, pixels = _png_curves(out)
    curves = {c["label"]: c for c in meta["curves"]}
    assert set(curves) == {"sac on toy/point (n=1)", "mbpo + ensemble on toy/point (n=1)", "pets + ensemble on toy/point (n=1)"}
    assert not curves["sac on toy/point (n=1)"]["marker"] and curves["sac on toy/point (n=1)"]["points"] == 100
    for name in ("mbpo + ensemble on toy/point (n=1)", "pets + ensemble on toy/point (n=1)"):
        c = curves[name]
        assert c["marker"] and c["points"] == 1
        # the marker is drawn where the metadata says: the pixel there has the curve's colour
        (x, y), = c["pixels"]
        want = np.array([int(c["color"][i:i + 2], 16) for i in (1, 3, 5)])
        patch = pixels[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2].reshape(-1, 3).astype(int)
        assert (np.abs(patch - want).sum(1) < 40).any(), (name, patch, want)


def test_plot_single_run_single_evaluation_is_not_empty(runs, tmp_path):
    from mbrl.plot import main

    out = tmp_path / "one.png"
    assert main([str(runs["pets"]), "--out", str(out)]) == 0
    meta, pixels = _png_curves(out)
    (c,) = meta["curves"]
    (x, y), = c["pixels"]
    want = np.array([int(c["color"][i:i + 2], 16) for i in (1, 3, 5)])
    assert 0 < x < pixels.shape[1] and 0 < y < pixels.shape[0]  # inside the image, not clipped away
    assert (np.abs(pixels[int(y), int(x)].astype(int) - want).sum() < 40)


# ---------------------------------------------------------------------------------- load and act
def test_load_and_act_every_kind_of_algo(runs, tmp_path):
    import torch

    import mbrl
    from mbrl.errors import UserError

    for name in ("sac", "mbpo", "pets", "dreamer"):
        agent = mbrl.load(runs[name])
        env = agent.make_env(seed=3)
        obs, _ = env.reset(seed=3)
        a = agent.act(obs)
        assert a.shape == env.action_space.shape and env.action_space.contains(a.astype(np.float32)), name
        obs, *_ = env.step(a)
        a2 = agent.act(obs)  # the acting state goes on: a latent model's posterior has seen two frames
        assert a2.shape == a.shape
        batch = np.stack([obs, obs, obs])
        assert agent.act(batch, is_first=True).shape == (3, *a.shape)  # a batch of 3 envs restarts the state
        with pytest.raises(UserError, match="valid"):
            agent.act(np.zeros((7, 7, 7)))
    # Dreamer keeps its posterior (the acting Tracker) from step to step; reset() starts a new one
    agent = mbrl.load(runs["dreamer"])
    env = agent.make_env(seed=5)
    obs, _ = env.reset(seed=5)
    a = agent.act(obs)
    tracker = agent._state
    deter = tracker.state.deter.clone()
    for _ in range(3):
        obs = env.step(a)[0]
        a = agent.act(obs)
    assert agent._state is tracker and tracker.n == 1 and not torch.equal(tracker.state.deter, deter)
    agent.reset()
    agent.act(obs)
    assert agent._state is not tracker


def test_load_and_act_offline_algo(tmp_path, one_thread):
    """An offline run (bc on a small toy/point dataset in D4RL's format) loads and acts the same way."""
    import h5py

    import mbrl

    rng = np.random.default_rng(0)
    n = 400
    path = tmp_path / "point-random.hdf5"
    with h5py.File(path, "w") as f:
        f["observations"] = rng.uniform(-1, 1, (n, 4)).astype(np.float32)
        f["actions"] = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
        f["rewards"] = -rng.uniform(0, 2, n).astype(np.float32)
        f["terminals"] = np.zeros(n, bool)
        f["timeouts"] = (np.arange(n) % 50 == 49)
    run = _train(tmp_path, "bc", ["env=d4rl/point-random", f"dataset_path={path}", "algo=bc", "algo.eval_env=toy/point", "steps=20",
                                  "eval_every=0", "eval_episodes=1", "learner.hidden=16", "tensorboard=false"])
    agent = mbrl.load(run)
    assert agent.env_name == "toy/point"
    env = agent.make_env(seed=0)
    obs, _ = env.reset(seed=0)
    assert env.action_space.contains(agent.act(obs).astype(np.float32))


# ----------------------------------------------------------------------------------------- videos
def _gif(path: Path) -> tuple[int, float, tuple[int, int], np.ndarray]:
    """(frames, total duration in ms, (width, height), first frame RGB) of a GIF."""
    from PIL import Image, ImageSequence

    im = Image.open(path)
    frames = list(ImageSequence.Iterator(im))
    return len(frames), sum(f.info["duration"] for f in frames), im.size, np.asarray(frames[0].convert("RGB"))


def test_evaluate_video_gif_and_keeps_metrics_when_the_video_fails(runs, tmp_path, capsys):
    from mbrl.evaluate import main

    out = tmp_path / "ep.gif"
    assert main([str(runs["sac"]), "--episodes", "1", "--video", str(out), "--video-frames", "12"]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["video/frames"] == 12 and "eval/return" in m
    n, ms, size, _ = _gif(out)
    assert size == (64, 64) and ms == 12 * 50  # toy/point renders 64x64 at 20 fps (50 ms a frame)
    # the video fails (a format it cannot write): the metrics are still printed, then one error line
    assert main([str(runs["sac"]), "--episodes", "1", "--video", str(tmp_path / "ep.avi")]) == 2
    cap = capsys.readouterr()
    assert "eval/return" in json.loads(cap.out.strip().splitlines()[-1])
    assert len(cap.err.strip().splitlines()) == 1 and cap.err.startswith("error: --video") and ".gif, .mp4" in cap.err


@pytest.mark.parametrize("env, algo, size", [
    ("gym/Pendulum-v1", ["algo=sac", *FAST_SAC], (500, 500)),
    ("dmc/cartpole-swingup", ["algo=sac", *FAST_SAC], (256, 256)),
    ("atari/pong", ["model=rssm", "algo=dreamer", *TINY_RSSM], (160, 210)),
])
def test_video_gym_dmc_atari(env, algo, size, tmp_path, one_thread):
    """Each suite's env renders through render_mode: gif and (with imageio-ffmpeg) mp4, read back."""
    import mbrl
    from mbrl.evaluate import record_video

    run = _train(tmp_path, "run", [f"env={env}", *algo, "steps=8", "algo.prefill=8", "eval_every=0", "eval_episodes=1",
                                   "tensorboard=false", "algo.buffer_size=100"])
    agent = mbrl.load(run)
    m = record_video(agent, tmp_path / "v.gif", max_frames=6)
    n, ms, got, first = _gif(tmp_path / "v.gif")
    assert m["video/frames"] == 6 and got == size and first.std() > 0  # a real picture, not a blank frame
    pytest.importorskip("imageio_ffmpeg", reason="mp4 needs imageio-ffmpeg (in setup.cfg; reinstall the venv)")
    import imageio.v2 as imageio

    record_video(agent, tmp_path / "v.mp4", max_frames=6)
    reader = imageio.get_reader(tmp_path / "v.mp4")
    assert reader.count_frames() == 6 and tuple(reader.get_meta_data()["size"]) == size


# ----------------------------------------------------------------------------- world-model videos
def test_dream_video_shows_real_frames_then_open_loop_predictions(runs, tmp_path, capsys):
    import mbrl
    from mbrl.evaluate import main

    out = tmp_path / "dream.gif"
    assert main([str(runs["dreamer"]), "--episodes", "1", "--dream", str(out), "--dream-context", "3", "--dream-horizon", "5",
                 "--dream-sequences", "2"]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["dream/frames"] == 8 and m["dream/context"] == 3
    n, ms, (w, h), first = _gif(out)
    assert (w, h) == (2 * 16, 3 * 16) and ms == 8 * 100  # 2 sequences side by side; real / model / error rows of 16x16
    # the top row is the real episode: sequence 0 starts at the env's reset observation (seed 321)
    env = mbrl.load(runs["dreamer"]).make_env(seed=321)
    obs0, _ = env.reset(seed=321)
    np.testing.assert_array_equal(first[:16, :16], np.moveaxis(obs0, 0, -1))
    # the model row's border: green while it reconstructs the context, red once it predicts
    from PIL import Image, ImageSequence

    frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(out))]
    if n == 8:  # (Pillow merges identical consecutive frames; these differ)
        assert tuple(frames[0][16, 0]) == (0, 200, 0) and tuple(frames[-1][16, 0]) == (220, 0, 0)


def test_dream_without_decoder_or_world_model_is_one_line(runs, tmp_path, capsys):
    from mbrl.evaluate import main

    for name, words in (("pets", "model=ensemble has no decoder"), ("sac", "algo=sac has no world model")):
        assert main([str(runs[name]), "--episodes", "1", "--dream", str(tmp_path / "d.gif")]) == 2
        cap = capsys.readouterr()
        assert "eval/return" in json.loads(cap.out.strip().splitlines()[-1])  # the evaluation is kept
        assert len(cap.err.strip().splitlines()) == 1 and words in cap.err, cap.err
        assert not (tmp_path / "d.gif").exists()


def test_training_logs_world_model_video_to_tensorboard(runs):
    from PIL import Image, ImageSequence
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(runs["dreamer"] / "tb"), size_guidance={"images": 0})
    acc.Reload()
    events = acc.Images("dream/openl")
    # 60 env steps after prefill x 24 / (4 x 12) = 30 updates (+1 pretrain): a video every 5 updates
    assert len(events) >= 5 and [e.step for e in events] == sorted(e.step for e in events)
    import io

    gif = Image.open(io.BytesIO(events[-1].encoded_image_string))
    assert gif.size == (4 * 16, 3 * 16) and (events[-1].width, events[-1].height) == gif.size
    assert sum(f.info["duration"] for f in ImageSequence.Iterator(gif)) == 12 * 100  # batch_length frames at 10 fps


# ------------------------------------------------------------------------------------- bench guard
def test_bench_never_replaces_committed_results(tmp_path):
    committed = ROOT / "results" / "mbpo_gym_hopper_v5_cpu.md"
    before = committed.read_bytes()
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("step,key,value,wall_time\n100,eval/return,1.0,1.0\n")
    r = run_cli("mbrl.bench", "mbpo", "--run-dir", str(run))  # --env gym/Hopper-v5 is the default
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: results/mbpo_gym_hopper_v5_cpu.md exists (a committed result); pass --overwrite to replace it"]
    assert committed.read_bytes() == before


def test_bench_guard_claim(tmp_path, monkeypatch):
    from mbrl.bench import common
    from mbrl.bench.peers import write_result
    from mbrl.errors import UserError

    p = tmp_path / "r.md"
    assert write_result(p, "t", "cmd", "one") == p
    with pytest.raises(UserError, match="r.md exists"):
        write_result(p, "t", "cmd", "two")
    assert p.read_text().endswith("one\n")
    monkeypatch.setattr(common, "OVERWRITE", True)
    write_result(p, "t", "cmd", "two")
    assert p.read_text().endswith("two\n")


@pytest.mark.parametrize("name", __import__("mbrl.models", fromlist=["names"]).names())
def test_every_backbone_with_a_decoder_draws_open_loop_videos(name, one_thread):
    """Built on the WorldModel protocol only: each registered backbone (tiny, untrained) with a
    decoder gives the real / model / difference video on a pixel batch; one without says so in one line."""
    from test_contract import SPACES, build, toy_batch

    from mbrl.errors import UserError
    from mbrl.models.openloop import open_loop_video

    model = build(name, "pixels")
    batch = toy_batch("pixels")
    B, T = batch["is_first"].shape
    C, H, W = SPACES["pixels"][0].shape
    if not model.has_decoder:
        with pytest.raises(UserError, match="has no decoder") as e:
            open_loop_video(model, batch["obs"], batch["action"], batch["is_first"], context=2)
        assert len(str(e.value).splitlines()) == 1
        return
    video = open_loop_video(model, batch["obs"], batch["action"], batch["is_first"], context=2)
    assert video.shape == (T, 3 * H, B * W, 3) and video.dtype == np.uint8
    real = np.moveaxis(batch["obs"].numpy(), 2, -1)  # [B, T, H, W, C]
    np.testing.assert_array_equal(video[:, :H, :W], real[0])  # the top row is the real sequence
