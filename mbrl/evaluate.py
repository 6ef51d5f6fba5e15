"""Evaluate a saved run: `python -m mbrl.evaluate <run_dir> [--episodes 10] [--video out.mp4] [--dream out.gif]`.

Loads the run's config.yaml and checkpoints/latest.pt (networks only; the replay buffer is not
needed) and runs evaluation episodes with the deterministic policy; prints the metrics as one JSON
line. `--video` records one episode as the env renders it (gym, dmc, atari and toy envs; .mp4 through
imageio-ffmpeg or .gif), `--dream` writes the world model's open-loop predictions beside the real
frames (any backbone with a decoder, image observations; mbrl/models/openloop.py). When a video
fails, the metrics already computed are still printed, then the error line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mbrl.errors import UserError

VIDEO_FRAMES = 1000  # frames of `--video` at most (an Atari episode can last 27k agent steps)
DMC_VIDEO_SIZE = 256  # dmc renders at the observation size (64); videos use this side instead


def load_algorithm(run_dir: Path, eval_episodes: int, device: Optional[str] = None):
    from omegaconf import OmegaConf

    from mbrl.train import build
    from mbrl.utils.checkpoint import load_checkpoint

    cfg_path = run_dir / "config.yaml"
    ckpts = [run_dir / "checkpoints" / n for n in ("latest.pt", "previous.pt")]
    if not cfg_path.is_file() or not any(p.is_file() for p in ckpts):
        missing = cfg_path if not cfg_path.is_file() else ckpts[0]
        raise UserError(f"{run_dir} is not a finished or checkpointed run: {missing} is missing")
    try:
        cfg = OmegaConf.load(cfg_path)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{cfg_path} is damaged ({type(e).__name__})") from None
    cfg.eval_episodes = eval_episodes
    if device is not None:
        cfg.device = device
    algo = build(cfg, run_dir=None)
    # networks only, from latest.pt or (damaged latest: one warning line) previous.pt; one line if neither loads
    path = algo.load(run_dir, networks_only=True)
    return algo, load_checkpoint(path, map_location=algo.device)


# ----------------------------------------------------------------------------------- --video
def render_env(agent, seed: int):
    """The run's env built to render rgb frames (`render_mode="rgb_array"`); a UserError if it cannot."""
    try:
        env = agent.make_env(seed, render_mode="rgb_array")
    except TypeError:  # an env whose constructor has no render_mode (toy/chain)
        env = agent.make_env(seed)
    if getattr(env.unwrapped, "render_mode", None) != "rgb_array":
        raise UserError(f"env {agent.env_name} does not render rgb frames; no video (valid: gym, dmc, atari envs, toy/point)")
    return env


def frame(env) -> np.ndarray:
    """One rgb frame [H, W, 3] uint8 of the env's current state."""
    u = env.unwrapped
    if hasattr(u, "physics") and hasattr(u, "camera"):  # dm_control: render larger than the observations
        img = u.physics.render(DMC_VIDEO_SIZE, DMC_VIDEO_SIZE, camera_id=u.camera)
    else:
        img = env.render()
    img = np.asarray(img) if img is not None else None
    if img is None or img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise UserError(f"env {type(u).__name__}: render() gave {None if img is None else img.shape}; a video needs rgb frames [H, W, 3]")
    return img[..., :3].astype(np.uint8, copy=False)


def record_video(agent, path: Path, max_frames: int = VIDEO_FRAMES, seed: int = 123) -> dict[str, float]:
    """One episode (at most `max_frames` frames, the first observation's included) to `path`."""
    from mbrl.utils.video import FORMATS, write_video

    if Path(path).suffix.lower() not in FORMATS:  # fail before playing the episode
        raise UserError(f"--video {path}: unknown format {Path(path).suffix or '(none)'!r}; valid: {', '.join(FORMATS)}")
    env = render_env(agent, seed)
    obs, _ = env.reset(seed=seed)
    agent.reset()
    frames, ret, done = [frame(env)], 0.0, False
    while not done and len(frames) < max_frames:
        obs, reward, terminated, truncated, _ = env.step(agent.act(obs))
        ret += float(reward)
        done = bool(terminated or truncated)
        frames.append(frame(env))
    fps = float(env.metadata.get("render_fps") or 30)
    env.close()
    write_video(path, frames, fps=min(max(fps, 1.0), 60.0))
    return {"video/frames": len(frames), "video/return": ret, "video/episode_done": float(done)}


# ----------------------------------------------------------------------------------- --dream
def world_model(algo) -> Any:
    from mbrl.models.base import WorldModel

    for m in algo.modules().values():
        if isinstance(m, WorldModel):
            return m
    raise UserError(f"algo={algo.name} has no world model; --dream needs a run with one (e.g. model=rssm algo=dreamer)")


def real_sequences(agent, sequences: int, length: int, seed: int):
    """`sequences` real episodes' first `length` steps acting with the agent, in the buffer's layout
    (obs [B, T, ...], action [B, T, ...] taken at obs, is_first [B, T]); cut to the shortest."""
    import torch

    obs_seqs, act_seqs = [], []
    for i in range(sequences):
        env = agent.make_env(seed + i)
        obs, _ = env.reset(seed=seed + i)
        agent.reset()
        os_, as_ = [], []
        for _ in range(length):
            a = agent.act(obs)
            os_.append(obs)
            as_.append(np.asarray(a))
            obs, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                break
        env.close()
        obs_seqs.append(os_)
        act_seqs.append(as_)
    T = min(len(s) for s in obs_seqs)

    def stack(seqs):
        first = seqs[0][0]
        if isinstance(first, dict):
            return {k: torch.as_tensor(np.stack([np.stack([o[k] for o in s[:T]]) for s in seqs])) for k in first}
        return torch.as_tensor(np.stack([np.stack(s[:T]) for s in seqs]))

    is_first = torch.zeros(sequences, T, dtype=torch.bool)
    is_first[:, 0] = True
    return stack(obs_seqs), stack(act_seqs), is_first


def dream_video(agent, path: Path, context: int = 5, horizon: int = 45, sequences: int = 4, seed: int = 321, fps: float = 10.0) -> dict[str, float]:
    """Real frames, the model's reconstructions of `context` frames then its open-loop predictions
    for `horizon` more, and their difference, for `sequences` fresh episodes side by side."""
    from mbrl.models.openloop import open_loop_video, require_decoder
    from mbrl.utils.video import FORMATS, write_video

    if Path(path).suffix.lower() not in FORMATS:
        raise UserError(f"--dream {path}: unknown format {Path(path).suffix or '(none)'!r}; valid: {', '.join(FORMATS)}")
    if context < 1 or horizon < 1 or sequences < 1:
        raise UserError(f"--dream: context={context}, horizon={horizon}, sequences={sequences}; valid: all >= 1")
    algo = agent.algo
    model = world_model(algo)
    require_decoder(model)  # before playing any episode
    obs, action, is_first = real_sequences(agent, sequences, context + horizon, seed)
    dev = algo.device
    from mbrl.data.batch import tree_map

    model.eval()
    video = open_loop_video(model, tree_map(lambda x: x.to(dev), obs), action.to(dev), is_first.to(dev), context=context)
    write_video(path, video, fps=fps)
    return {"dream/frames": int(video.shape[0]), "dream/context": int(min(context, video.shape[0] - 1)), "dream/sequences": sequences}


def main(argv: list[str] | None = None) -> int:
    import os

    p = argparse.ArgumentParser(prog="python -m mbrl.evaluate", description="Evaluate a saved run.")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--video", type=Path, help="write one episode as the env renders it to this file (.mp4 or .gif)")
    p.add_argument("--video-frames", type=int, default=VIDEO_FRAMES, help=f"at most this many video frames (default {VIDEO_FRAMES})")
    p.add_argument("--dream", type=Path, help="write the world model's open-loop predictions beside the real frames (.gif or .mp4)")
    p.add_argument("--dream-context", type=int, default=5, help="real frames the model observes first (default 5)")
    p.add_argument("--dream-horizon", type=int, default=45, help="frames it then predicts open loop (default 45)")
    p.add_argument("--dream-sequences", type=int, default=4, help="episodes side by side (default 4)")
    a = p.parse_args(argv)
    from mbrl.agent import Agent

    for flag, value in (("--episodes", a.episodes), ("--video-frames", a.video_frames), ("--dream-horizon", a.dream_horizon),
                        ("--dream-sequences", a.dream_sequences), ("--dream-context", a.dream_context)):
        if value < 1:
            print(f"error: {flag} {value}; valid: an integer >= 1", file=sys.stderr)
            return 2

    try:
        algo, ckpt = load_algorithm(a.run_dir, a.episodes)
        metrics = algo.evaluate(a.episodes)
    except UserError as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    metrics["env_steps"] = ckpt["counters"]["env_steps"]
    from omegaconf import OmegaConf

    agent = Agent(algo, OmegaConf.load(a.run_dir / "config.yaml"), a.run_dir, metrics["env_steps"])
    jobs = []
    if a.video:
        jobs.append((f"--video {a.video}", lambda: record_video(agent, a.video, max_frames=max(1, a.video_frames))))
    if a.dream:
        jobs.append((f"--dream {a.dream}", lambda: dream_video(agent, a.dream, a.dream_context, a.dream_horizon, a.dream_sequences)))
    failed = None
    for what, job in jobs:  # a failing video never loses the metrics computed above
        try:
            metrics.update(job())
        except Exception as e:  # noqa: BLE001 - printed below; bugs re-raised after the metrics
            failed = (what, e)
            break
    print(json.dumps(metrics), flush=True)
    if failed is not None:
        what, e = failed
        if not isinstance(e, UserError) or os.environ.get("MBRL_DEBUG"):
            raise e
        print(f"error: {what}: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
