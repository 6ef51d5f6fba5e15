"""The shared training loop. An algorithm supplies what differs; the loop owns the rest.

A subclass implements:
- `act(obs, is_first, state, explore) -> (action, state)`: actions for a batch of envs (numpy in,
  numpy out; `state` is the algorithm's per-env recurrent state or None).
- `train_step() -> dict`: one gradient update of whatever it trains (sampling its own batches).
- `modules() -> dict[str, object]`: everything with `state_dict()` / `load_state_dict()` that a
  checkpoint must hold (networks, optimisers, learners, normalisers).
- optionally `pretrain()` (called once when prefill ends) and `end_of_episode(env_ids)`.

The loop: env interaction on a vector env, random prefill, `train_ratio` gradient updates per env step
(fractional ratios accumulate), evaluation every `eval_every` env steps, logging (tensorboard,
metrics.csv, progress bar), crash-safe checkpoints (models, optimisers, buffer, counters, RNG) and
`resume`.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from mbrl.utils.checkpoint import load_checkpoint, save_checkpoint
from mbrl.utils.logging import Logger
from mbrl.utils.seeding import get_rng_state, seed_everything, set_rng_state
from mbrl.errors import UserError


@dataclass
class LoopConfig:
    steps: int = 20_000  # env steps in total (summed over vector envs)
    prefill: int = 1_000  # random-action env steps before learning starts
    train_ratio: float = 1.0  # gradient updates per env step (after prefill)
    eval_every: int = 5_000  # env steps between evaluations (0: only at the end)
    eval_episodes: int = 5
    log_every: int = 1_000  # env steps between metric flushes
    checkpoint_every: int = 10_000  # env steps between checkpoints (0: only at the end)
    save_buffer: bool = True  # include the replay buffer in checkpoints
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    tensorboard: bool = True

    @classmethod
    def from_mapping(cls, m: Any) -> "LoopConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: m[k] for k in names if k in m})


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _stack_final_obs(next_obs: Any, info: dict, done: np.ndarray) -> Any:
    """next_obs with the true final observation where an episode ended (SAME_STEP autoreset)."""
    if not done.any():
        return next_obs
    final = info.get("final_obs")
    if final is None:
        raise RuntimeError("vector env must use autoreset_mode=SAME_STEP and report info['final_obs'] (use envs.make)")
    idx = np.flatnonzero(done)
    if isinstance(next_obs, dict):
        out = {k: v.copy() for k, v in next_obs.items()}
        for i in idx:
            for k in out:
                out[k][i] = final[i][k]
        return out
    out = next_obs.copy()
    for i in idx:
        out[i] = final[i]
    return out


class Algorithm:
    """Base class: owns the loop. See the module docstring for what a subclass supplies."""

    name: str = "algorithm"

    def __init__(self, env, eval_env, buffer, loop: LoopConfig, run_dir: Optional[str | Path] = None):
        self.env = env
        self.eval_env = eval_env
        self.buffer = buffer
        self.loop = loop
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.device = resolve_device(loop.device)
        self.num_envs = env.num_envs
        self.action_space = env.single_action_space
        self.discrete = hasattr(self.action_space, "n")
        # counters (all checkpointed)
        self.env_steps = 0
        self.updates = 0
        self.episodes = 0
        self._update_budget = 0.0
        self._pretrained = False
        self._next_eval = loop.eval_every if loop.eval_every else None
        self._next_log = loop.log_every
        self._next_ckpt = loop.checkpoint_every if loop.checkpoint_every else None
        self.eval_history: list[tuple[int, float]] = []
        self.logger: Optional[Logger] = None
        seed_everything(loop.seed)
        env.action_space.seed(loop.seed)

    # ----- to be supplied by subclasses ---------------------------------------------------------
    def act(self, obs: Any, is_first: np.ndarray, state: Any, explore: bool) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def train_step(self) -> dict[str, float]:
        raise NotImplementedError

    def modules(self) -> dict[str, Any]:
        raise NotImplementedError

    def pretrain(self) -> dict[str, float]:
        return {}

    def end_of_episode(self, env_ids: np.ndarray) -> None:
        pass

    def can_train(self) -> bool:
        """Whether there is enough data for a gradient update (override for sequence batches)."""
        return len(self.buffer) > 0

    # ----- helpers ------------------------------------------------------------------------------
    def random_actions(self) -> np.ndarray:
        return self.env.action_space.sample()

    # ----- the loop -----------------------------------------------------------------------------
    def run(self, resume: Optional[str | Path] = None) -> dict[str, float]:
        """Train until `loop.steps` env steps; returns the final evaluation metrics."""
        if resume is not None:
            self.load(resume)
        self.logger = Logger(self.run_dir, self.loop.steps, self.env_steps, self.loop.progress, self.loop.tensorboard)
        try:
            final = self._run()
        finally:
            self.logger.close()
        return final

    def _run(self) -> dict[str, float]:
        loop, n = self.loop, self.num_envs
        # resets are seeded from (seed, env_steps) so a resumed run is reproducible too
        obs, _ = self.env.reset(seed=loop.seed + self.env_steps)
        is_first = np.ones(n, dtype=bool)
        state = None
        ep_ret = np.zeros(n)
        ep_len = np.zeros(n, dtype=np.int64)
        t0, steps0 = time.time(), self.env_steps
        last_eval: dict[str, float] = {}
        while self.env_steps < loop.steps:
            if self.env_steps < loop.prefill:
                action = self.random_actions()
            else:
                with torch.no_grad():
                    action, state = self.act(obs, is_first, state, explore=True)
            next_obs, reward, terminated, truncated, info = self.env.step(action)
            done = np.logical_or(terminated, truncated)
            real_next = _stack_final_obs(next_obs, info, done)
            self.buffer.add(obs, action, reward, real_next, terminated, truncated, reset=is_first)
            ep_ret += reward
            ep_len += 1
            if done.any():
                ids = np.flatnonzero(done)
                for i in ids:
                    self.episodes += 1
                    self.logger.log(self.env_steps + n, {"train/return": ep_ret[i], "train/length": ep_len[i]})
                ep_ret[ids] = 0.0
                ep_len[ids] = 0
                self.end_of_episode(ids)
            obs, is_first = next_obs, done
            self.env_steps += n
            self.logger.progress(n)

            if self.env_steps >= loop.prefill:
                if not self._pretrained and self.can_train():
                    self._pretrained = True
                    self.logger.accumulate(self.pretrain())
                # only the env steps taken after prefill earn gradient updates
                self._update_budget += min(n, self.env_steps - loop.prefill) * loop.train_ratio
                while self._update_budget >= 1.0 and self.can_train():
                    self.logger.accumulate(self.train_step())
                    self.updates += 1
                    self._update_budget -= 1.0

            last_eval = self.periodic(self.env_steps, lambda: {"time/steps_per_s": (self.env_steps - steps0) / max(time.time() - t0, 1e-9), "time/updates": self.updates}) or last_eval
        return self.finish(self.env_steps, last_eval)

    def periodic(self, now: int, rates: Callable[[], dict[str, float]]) -> Optional[dict[str, float]]:
        """Evaluate, flush logs (with `rates()`) and checkpoint when `now` passes their intervals;
        returns the evaluation metrics if an evaluation ran."""
        out = None
        if self._next_eval is not None and now >= self._next_eval:
            out = self.evaluate()
            self._next_eval += self.loop.eval_every
        if now >= self._next_log:
            self.logger.accumulate(rates())
            self.logger.flush(now)
            self._next_log += self.loop.log_every
        if self._next_ckpt is not None and now >= self._next_ckpt:
            self.save()
            self._next_ckpt += self.loop.checkpoint_every
        return out

    def finish(self, now: int, last_eval: dict[str, float]) -> dict[str, float]:
        """Final evaluation (unless one just ran at `now`), log flush and checkpoint."""
        if not last_eval or (self.eval_history and self.eval_history[-1][0] != now):
            last_eval = self.evaluate()
        self.logger.flush(now)
        self.save()
        return last_eval

    @torch.no_grad()
    def evaluate(self, episodes: Optional[int] = None) -> dict[str, float]:
        """Run `episodes` evaluation episodes (one per eval env; policy with explore=False)."""
        episodes = episodes or self.loop.eval_episodes
        env = self.eval_env
        m = env.num_envs
        returns: list[float] = []
        lengths: list[int] = []
        rounds = 0
        while len(returns) < episodes:
            obs, _ = env.reset(seed=10_000 + self.loop.seed * 1000 + rounds * m)
            is_first = np.ones(m, dtype=bool)
            active = np.zeros(m, dtype=bool)
            active[: min(m, episodes - len(returns))] = True
            ep_ret, ep_len = np.zeros(m), np.zeros(m, dtype=np.int64)
            state = None
            while active.any():
                action, state = self.act(obs, is_first, state, explore=False)
                obs, reward, terminated, truncated, _ = env.step(action)
                ep_ret += reward * active
                ep_len += active
                done = np.logical_or(terminated, truncated) & active
                for i in np.flatnonzero(done):
                    returns.append(float(ep_ret[i]))
                    lengths.append(int(ep_len[i]))
                active &= ~done
                is_first = np.logical_or(terminated, truncated)
            rounds += 1
        metrics = {"eval/return": float(np.mean(returns)), "eval/return_std": float(np.std(returns)), "eval/length": float(np.mean(lengths))}
        self.eval_history.append((self.env_steps, metrics["eval/return"]))
        if self.logger is not None:
            self.logger.log(self.env_steps, metrics)
        return metrics

    # ----- checkpoints --------------------------------------------------------------------------
    def counters(self) -> dict[str, Any]:
        return {
            "env_steps": self.env_steps,
            "updates": self.updates,
            "episodes": self.episodes,
            "update_budget": self._update_budget,
            "pretrained": self._pretrained,
            "next_eval": self._next_eval,
            "next_log": self._next_log,
            "next_ckpt": self._next_ckpt,
            "eval_history": list(self.eval_history),
        }

    def save(self, directory: Optional[str | Path] = None) -> Optional[Path]:
        """Write checkpoints/latest.pt (+ the buffer) atomically; the pair is always consistent:
        the buffer goes to a new file first, the checkpoint that names it is renamed in last."""
        directory = Path(directory) if directory is not None else (self.run_dir / "checkpoints" if self.run_dir else None)
        if directory is None:
            return None
        directory.mkdir(parents=True, exist_ok=True)
        buffer_file = None
        if self.loop.save_buffer:
            buffer_file = f"buffer_{self.env_steps}.npz"
            self.buffer.save(directory / buffer_file)  # atomic by the buffer's contract
        ckpt = {
            "algo": self.name,
            "counters": self.counters(),
            "modules": {k: m.state_dict() for k, m in self.modules().items()},
            "rng": get_rng_state(),
            "buffer_file": buffer_file,
        }
        path = save_checkpoint(ckpt, directory / "latest.pt")
        for old in directory.glob("buffer_*.npz"):
            if old.name != buffer_file:
                old.unlink(missing_ok=True)
        return path

    def load(self, path: str | Path) -> None:
        """Restore from a run dir, its checkpoints/ dir, or a latest.pt file."""
        path = Path(path)
        if path.is_dir():
            path = path / "checkpoints" / "latest.pt" if (path / "checkpoints").is_dir() else path / "latest.pt"
        ckpt = load_checkpoint(path, map_location=self.device)
        if ckpt.get("algo") != self.name:
            raise UserError(f"checkpoint {path} is from algo {ckpt.get('algo')!r}, not {self.name!r}")
        for k, m in self.modules().items():
            m.load_state_dict(ckpt["modules"][k])
        c = ckpt["counters"]
        self.env_steps, self.updates, self.episodes = c["env_steps"], c["updates"], c["episodes"]
        self._update_budget, self._pretrained = c["update_budget"], c["pretrained"]
        self._next_eval, self._next_log, self._next_ckpt = c["next_eval"], c["next_log"], c["next_ckpt"]
        self.eval_history = [tuple(x) for x in c["eval_history"]]
        if ckpt.get("buffer_file"):
            self.buffer = type(self.buffer).load(path.parent / ckpt["buffer_file"], device=self.buffer.device)
            self.on_buffer_replaced()
        set_rng_state(ckpt["rng"])

    def on_buffer_replaced(self) -> None:
        """Called after `load` swapped in the checkpointed buffer (re-bind references to it here)."""
