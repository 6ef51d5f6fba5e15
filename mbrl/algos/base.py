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

Checkpoints (`<run>/checkpoints/`): `latest.pt` and the one before it, `previous.pt`, each with the
buffer file it names; written every `checkpoint_every` env steps, every `checkpoint_minutes` of
wall-clock, at the end, and when a stop is requested (SIGINT / SIGTERM, `mbrl.utils.stop`): then the
loop saves the step reached and raises `Interrupted`. Where the envs pickle exactly
(`envs.snapshot_safe`: toy, classic control, dm_control state tasks) a checkpoint also holds them and
the loop's live state (current observations, episode returns, the acting state), so a resumed run
continues the same episodes and reaches the same counters and buffer as one never interrupted;
elsewhere a resumed run starts new episodes. A non-finite loss (or non-finite weights at a checkpoint)
stops the run with a UserError and writes nothing, so the last good checkpoint stays. `load` falls
back from a damaged `latest.pt` (or its buffer) to `previous.pt` with one warning line.
"""
from __future__ import annotations

import dataclasses
import math
import os
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from mbrl.utils.checkpoint import load_checkpoint, save_checkpoint
from mbrl.utils.logging import Logger, trim_metrics
from mbrl.utils.seeding import get_rng_state, seed_everything, set_rng_state
from mbrl.utils.stop import Interrupted, stop_requested
from mbrl.errors import UserError

CHECKPOINT_KEYS = ("algo", "counters", "modules", "rng")


def human_normalized(env: str, score: float) -> dict[str, float]:
    """`eval/human_normalized_score` for an Atari game with published random / human scores (the
    Atari100k games, envs/scores.py), else nothing."""
    if not env.startswith("atari/"):
        return {}
    from mbrl.envs.scores import human_normalized_score

    try:
        return {"eval/human_normalized_score": human_normalized_score(env, score)}
    except UserError:  # a game outside the published tables
        return {}


@dataclass
class LoopConfig:
    steps: int = 20_000  # env steps in total (summed over vector envs)
    prefill: int = 1_000  # random-action env steps before learning starts
    train_ratio: float = 1.0  # gradient updates per env step (after prefill)
    eval_every: int = 5_000  # env steps between evaluations (0: only at the end)
    eval_episodes: int = 5
    log_every: int = 1_000  # env steps between metric flushes
    checkpoint_every: int = 10_000  # env steps between checkpoints (0: only at the end)
    checkpoint_minutes: float = 10.0  # also checkpoint after this much wall-clock (0: off)
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
        # what the run is (env, algo, model; set by mbrl.train.build), checked when a checkpoint loads
        self.meta: dict[str, Any] = {}
        self.snapshot_envs = False  # whether checkpoints hold the training envs (envs.snapshot_safe)
        self._live: Optional[tuple] = None  # the loop's (obs, is_first, state, ep_ret, ep_len)
        self._resumed_live: Optional[tuple] = None
        self._wall_offset = 0.0
        self._last_ckpt_time = time.time()
        self._latest_buffer_file: Optional[str] = None  # the buffer file latest.pt names (known once saved or loaded)
        self._latest_known = False
        self._saved_at: Optional[int] = None  # the step of the last checkpoint this process wrote
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
            if self.env_steps >= self.loop.steps:
                print(f"run {resume} already finished at step {self.env_steps} (steps={self.loop.steps}); nothing to do "
                      f"(pass a larger steps= to train on)", file=sys.stderr)
                return {"eval/return": self.eval_history[-1][1]} if self.eval_history else {}
            if self.run_dir is not None:  # rows logged after the checkpoint are logged again from it
                trim_metrics(self.run_dir / "metrics.csv", self.env_steps)
        self.logger = Logger(self.run_dir, self.loop.steps, self.env_steps, self.loop.progress, self.loop.tensorboard,
                             wall_offset=self._wall_offset)
        self._last_ckpt_time = time.time()
        try:
            final = self._run()
        finally:
            self.logger.close()
        return final

    def _run(self) -> dict[str, float]:
        loop, n = self.loop, self.num_envs
        if self._resumed_live is not None:  # the envs and the loop's state came back with the checkpoint
            obs, is_first, state, ep_ret, ep_len = self._resumed_live
            self._resumed_live = None
        else:
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
                    self.logger.accumulate(self.checked(self.pretrain()))
                # only the env steps taken after prefill earn gradient updates
                self._update_budget += min(n, self.env_steps - loop.prefill) * loop.train_ratio
                while self._update_budget >= 1.0 and self.can_train():
                    self.logger.accumulate(self.checked(self.train_step()))
                    self.updates += 1
                    self._update_budget -= 1.0

            self._live = (obs, is_first, state, ep_ret, ep_len)
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
        minutes = float(self.loop.checkpoint_minutes or 0)
        if self._next_ckpt is not None and now >= self._next_ckpt:
            self.save()
            self._next_ckpt += self.loop.checkpoint_every
        elif minutes > 0 and time.time() - self._last_ckpt_time >= 60.0 * minutes:
            self.save()
        request = stop_requested()
        if request is not None:
            path = self.save()
            raise Interrupted(request[0], request[1], now, str(path) if path else None)
        return out

    def checked(self, metrics: dict[str, float]) -> dict[str, float]:
        """`metrics` of one update, after checking that no loss is NaN or inf (a diverged run stops here,
        before anything of it is saved: the last checkpoint is the last good one)."""
        for k, v in metrics.items():
            if "loss" in k and not math.isfinite(float(v)):
                self._diverged(f"{k}={float(v)}")
        return metrics

    def _diverged(self, what: str) -> None:
        last = self.run_dir / "checkpoints" / "latest.pt" if self.run_dir else None
        keep = f"the last good checkpoint {last} is kept (resume= it with a lower learning rate)" if last and last.is_file() else "no checkpoint was written yet"
        raise UserError(f"training diverged: non-finite {what} at update {self.updates} (step {self.env_steps}); the run stopped and {keep}")

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
        metrics.update(human_normalized(str(self.meta.get("env") or ""), metrics["eval/return"]))
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
        bad = _first_non_finite(self.modules())
        modules = {k: m.state_dict() for k, m in self.modules().items()}
        if bad:
            self._diverged(f"weights in {bad}")
        buffer_file = None
        if self.loop.save_buffer:
            buffer_file = f"buffer_{self.env_steps}.npz"
            self.buffer.save(directory / buffer_file)  # atomic by the buffer's contract
        counters = self.counters()
        counters["wall_time"] = self.logger.elapsed() if self.logger is not None else self._wall_offset
        ckpt = {
            "algo": self.name,
            "meta": dict(self.meta),
            "counters": counters,
            "modules": modules,
            "rng": get_rng_state(),
            "buffer_file": buffer_file,
        }
        if self.snapshot_envs and self._live is not None:
            ckpt["envs"] = pickle.dumps(self.env)
            ckpt["live"] = self._live
        latest, previous = directory / "latest.pt", directory / "previous.pt"
        latest_known = self._latest_known
        if latest.is_file() and self._saved_at != self.env_steps:
            os.replace(latest, previous)  # keep the last two: a damaged latest falls back to it
        elif latest.is_file():  # saved again at the same step (the end of a run): latest is replaced, previous kept
            latest_known, self._latest_buffer_file = True, _buffer_file_of(previous)
        path = save_checkpoint(ckpt, latest)
        self._last_ckpt_time = time.time()
        keep = {buffer_file, self._latest_buffer_file if latest_known else _buffer_file_of(previous)}
        self._latest_buffer_file, self._latest_known = buffer_file, True
        self._saved_at = self.env_steps
        for old in directory.glob("buffer_*.npz"):
            if old.name not in keep:
                old.unlink(missing_ok=True)
        return path

    @staticmethod
    def checkpoint_files(path: str | Path) -> list[Path]:
        """The checkpoints to try, newest first: a run dir or its checkpoints/ dir gives latest.pt then
        previous.pt (where they exist); a file gives itself."""
        path = Path(path)
        if not path.is_dir():
            return [path]
        d = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        files = [f for f in (d / "latest.pt", d / "previous.pt") if f.is_file()]
        if not files:
            raise UserError(f"no checkpoint in {d} (expected latest.pt or previous.pt)")
        return files

    def load(self, path: str | Path, networks_only: bool = False) -> Path:
        """Restore from a run dir, its checkpoints/ dir, or a checkpoint file (`networks_only`: the
        modules, for evaluation). A damaged or foreign latest.pt (or its buffer) falls back to
        previous.pt with one warning line. Returns the file loaded."""
        files = self.checkpoint_files(path)
        for i, f in enumerate(files):
            try:
                self._load_file(f, networks_only)
                return f
            except UserError as e:
                if i + 1 == len(files):
                    raise
                if not networks_only:  # set the damaged file aside (kept, not deleted), so the next save rotates the good one
                    f.replace(f.with_name(f.name + ".damaged"))
                print(f"warning: {e}; falling back to {files[i + 1]}", file=sys.stderr)
        raise AssertionError("unreachable")

    def _load_file(self, path: Path, networks_only: bool) -> None:
        ckpt = load_checkpoint(path, map_location=self.device, keys=CHECKPOINT_KEYS)
        if ckpt.get("algo") != self.name:
            raise UserError(f"checkpoint {path} is from algo {ckpt.get('algo')!r}, not {self.name!r}")
        theirs = ckpt.get("meta") or {}
        for k, mine in self.meta.items():
            if k in theirs and theirs[k] != mine:
                raise UserError(f"checkpoint {path} is from {k}={theirs[k]}, this run is {k}={mine}")
        buffer = None
        if not networks_only and ckpt.get("buffer_file"):
            bfile = path.parent / ckpt["buffer_file"]
            if not bfile.is_file():
                raise UserError(f"checkpoint {path} names buffer {bfile}, which is missing")
            try:
                buffer = type(self.buffer).load(bfile, device=self.buffer.device)
            except UserError:
                raise
            except Exception as e:  # noqa: BLE001 (a truncated or damaged npz)
                raise UserError(f"replay buffer {bfile} is damaged ({type(e).__name__}: {str(e).strip()[:100]})") from None
        mods = self.modules()
        missing = sorted(set(mods) - set(ckpt["modules"]))
        if missing:
            raise UserError(f"checkpoint {path} has no {', '.join(missing)}: it is from another kind of run")
        for k, m in mods.items():
            try:
                m.load_state_dict(ckpt["modules"][k])
            except (RuntimeError, KeyError, ValueError, TypeError) as e:
                first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
                raise UserError(f"checkpoint {path} does not fit this run's {k} (another env or model?): {first}") from None
        if networks_only:
            return
        c = ckpt["counters"]
        self.env_steps, self.updates, self.episodes = c["env_steps"], c["updates"], c["episodes"]
        self._update_budget, self._pretrained = c["update_budget"], c["pretrained"]
        self._next_eval, self._next_log, self._next_ckpt = c["next_eval"], c["next_log"], c["next_ckpt"]
        self.eval_history = [tuple(x) for x in c["eval_history"]]
        self._wall_offset = float(c.get("wall_time", 0.0))
        self._latest_buffer_file, self._latest_known = ckpt.get("buffer_file"), path.name == "latest.pt"
        if buffer is not None:
            self.buffer = buffer
            self.on_buffer_replaced()
        self._resumed_live = None
        if ckpt.get("envs") is not None and self.snapshot_envs:
            try:
                env = pickle.loads(ckpt["envs"])
            except Exception as e:  # noqa: BLE001
                print(f"warning: the envs saved in {path} do not load ({type(e).__name__}); the resumed run starts new episodes", file=sys.stderr)
            else:
                self.env.close()
                self.env = env
                self._resumed_live = ckpt["live"]
        set_rng_state(ckpt["rng"])

    def on_buffer_replaced(self) -> None:
        """Called after `load` swapped in the checkpointed buffer (re-bind references to it here)."""


def _first_non_finite(modules: dict[str, Any]) -> Optional[str]:
    """The name of the first parameter of the checkpointed networks holding a NaN or inf, else None."""
    for k, m in modules.items():
        if isinstance(m, torch.nn.Module):
            for name, p in m.named_parameters():
                if p.is_floating_point() and not bool(torch.isfinite(p).all()):
                    return f"{k}.{name}"
    return None


def _buffer_file_of(checkpoint: Path) -> Optional[str]:
    """The buffer file a checkpoint names (read cheaply: None if it is missing or unreadable)."""
    if not checkpoint.is_file():
        return None
    try:
        return load_checkpoint(checkpoint).get("buffer_file")
    except Exception:  # noqa: BLE001
        return None
