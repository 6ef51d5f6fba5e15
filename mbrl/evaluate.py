"""Evaluate a saved run: `python -m mbrl.evaluate <run_dir> [--episodes 10] [--video out.mp4]`.

Loads the run's config.yaml and checkpoints/latest.pt (networks only; the replay buffer is not
needed) and runs evaluation episodes with the deterministic policy. `--video` records the first
episode (pixel observations, or the env's rgb render where it has one).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mbrl.errors import UserError


def load_algorithm(run_dir: Path, eval_episodes: int):
    from omegaconf import OmegaConf

    from mbrl.train import build
    from mbrl.utils.checkpoint import load_checkpoint

    cfg_path = run_dir / "config.yaml"
    ckpt_path = run_dir / "checkpoints" / "latest.pt"
    for p in (cfg_path, ckpt_path):
        if not p.is_file():
            raise UserError(f"{run_dir} is not a finished or checkpointed run: {p} is missing")
    cfg = OmegaConf.load(cfg_path)
    cfg.eval_episodes = eval_episodes
    algo = build(cfg, run_dir=None)
    ckpt = load_checkpoint(ckpt_path, map_location=algo.device)
    for k, m in algo.modules().items():
        m.load_state_dict(ckpt["modules"][k])
    return algo, ckpt


def record_video(algo, path: Path, max_steps: int = 10_000) -> int:
    import imageio.v2 as imageio
    import torch

    env = algo.eval_env
    obs, _ = env.reset(seed=123)
    is_first = np.ones(env.num_envs, dtype=bool)
    state, frames = None, []
    for _ in range(max_steps):
        if isinstance(obs, np.ndarray) and obs.dtype == np.uint8 and obs.ndim == 4:
            frames.append(np.moveaxis(obs[0], 0, -1) if obs.shape[1] in (1, 3) else obs[0])
        else:
            frame = env.call("render")[0] if hasattr(env, "call") else None
            if frame is None:
                raise UserError("this env has neither pixel observations nor an rgb render; no video")
            frames.append(frame)
        with torch.no_grad():
            action, state = algo.act(obs, is_first, state, explore=False)
        obs, _, term, trunc, _ = env.step(action)
        is_first = np.logical_or(term, trunc)
        if is_first[0]:
            break
    imageio.mimsave(path, frames, fps=30)
    return len(frames)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mbrl.evaluate", description="Evaluate a saved run.")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--video", type=Path, help="write the first episode to this file (.mp4 or .gif)")
    a = p.parse_args(argv)
    try:
        algo, ckpt = load_algorithm(a.run_dir, a.episodes)
        metrics = algo.evaluate(a.episodes)
        if a.video:
            n = record_video(algo, a.video)
            metrics["video_frames"] = n
    except UserError as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    metrics["env_steps"] = ckpt["counters"]["env_steps"]
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
