"""DreamerV3: world model + actor-critic in imagination.

`python -m mbrl.train env=dmc/walker-walk model=rssm` (algo=dreamer is the RSSM's default).
Any WorldModel backbone works (`model=<backbone> algo=dreamer`, e.g. model=ensemble): the world model
is trained with `loss(batch)` on replayed sequences, and the actor-critic (learner=actor_critic)
imagines with `imagine()` from the posterior states of that batch, which `loss` returns. Acting
tracks the posterior one step at a time (`Tracker`).

Replay ratio as DreamerV3 defines it (paper sec. "Replay ratio", reference `run.train_ratio`):
replayed steps per env step = batch_size x batch_length x updates / env steps, so the loop's
updates per env step are `train_ratio / (batch_size * batch_length)`.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from mbrl.algos.base import Algorithm, LoopConfig
from mbrl.algos.common import build_learner, build_model, loop_config, make_buffer, make_envs, replay_sampling, to_dict
from mbrl.errors import UserError
from mbrl.learners.actor_critic import ActorCritic
from mbrl.models.base import Tracker, WorldModel
from mbrl.utils.optim import Optim


def native_bf16(device: torch.device) -> bool:
    """True where `device` computes bfloat16 matmuls natively: a CUDA GPU with bf16 support, or a CPU
    with AVX512-BF16 or AMX-BF16 (Linux /proc/cpuinfo flags); elsewhere bf16 is emulated and slow."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return not {"avx512_bf16", "amx_bf16"}.isdisjoint(flags.split())


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` -> bf16 where the device computes it natively (the DreamerV3 reference computes in
    bfloat16: `jax.compute_dtype: bfloat16`), else fp32; fp32 / bf16 are kept as given."""
    if precision not in PRECISIONS:
        raise UserError(f"algo.precision={precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


PRECISIONS = ("auto", "fp32", "bf16")


class Dreamer(Algorithm):
    name = "dreamer"

    def __init__(self, env, eval_env, buffer, world_model: WorldModel, actor_critic: ActorCritic, loop: LoopConfig,
                 batch_size: int = 16, batch_length: int = 64, wm_opt: Optional[dict] = None, precision: str = "auto",
                 pretrain_updates: int = 1, video_every: int = 0, run_dir=None):
        super().__init__(env, eval_env, buffer, loop, run_dir)
        self.precision = resolve_precision(precision, self.device)  # bad values fail before anything is built
        self.wm = world_model.to(self.device)
        self.ac = actor_critic.to(self.device)
        self.batch_size, self.batch_length = int(batch_size), int(batch_length)
        # paper v1: world model Adam lr 1e-4, eps 1e-8, gradient clipping 1000
        wo = dict(kind="adam", lr=1e-4, eps=1e-8, clip=1000.0)
        wo.update(wm_opt or {})
        self.wm_optim = Optim(self.wm.parameters(), **wo)
        self.pretrain_updates = int(pretrain_updates)
        if int(video_every) < 0:
            raise UserError(f"algo.video_every={video_every}; valid: 0 (off) or the updates between world-model videos (e.g. 5000)")
        self.video_every = int(video_every)

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------------------------------
    def act(self, obs: Any, is_first: np.ndarray, state: Any, explore: bool):
        if state is None:
            state = Tracker(self.wm, len(is_first), self.device)
        with self.autocast():
            latent = state.observe(obs, is_first)
            action = self.ac.act(self.wm.features(latent), explore=explore).float()
        state.acted(action)
        if self.discrete:
            env_action = action.argmax(-1).cpu().numpy()
        else:
            env_action = action.clamp(-1, 1).cpu().numpy().astype(np.float32)
        return env_action, state

    def can_train(self) -> bool:
        return len(self.buffer) >= self.num_envs * (self.batch_length + self.batch_size)

    def train_step(self) -> dict[str, float]:
        batch = self.buffer.sample_sequences(self.batch_size, self.batch_length).to(self.device)
        metrics = self.update(batch)
        if self.video_every and (self.updates + 1) % self.video_every == 0:
            self.log_video(batch)
        return metrics

    def log_video(self, batch, sequences: int = 4) -> None:
        """DreamerV3's `openl` report to tensorboard (`dream/openl`): the world model's open-loop
        predictions on replayed sequences beside the real frames (mbrl/models/openloop.py). Only for
        backbones with a decoder and image observations; nothing otherwise."""
        from mbrl.data.batch import tree_map
        from mbrl.models.openloop import image_of, open_loop_video

        if self.logger is None or not self.wm.has_decoder or image_of(batch["obs"]) is None:
            return
        n = min(int(sequences), self.batch_size)
        with self.autocast():
            video = open_loop_video(self.wm, tree_map(lambda x: x[:n], batch["obs"]), batch["action"][:n], batch["is_first"][:n])
        self.logger.video("dream/openl", video, self.env_steps)

    def update(self, batch) -> dict[str, float]:
        """One full Dreamer update on a sequence batch: world model, then actor and critic."""
        self.wm.train()
        with self.autocast():
            loss, metrics, start = self.wm.loss(batch)
        metrics["wm/grad_norm"] = self.wm_optim.step(loss)
        cont = 1.0 - batch["terminated"].float()
        metrics.update(self.ac.imagine_and_update(self.wm, start, cont, autocast=self.autocast()))
        return metrics

    def pretrain(self) -> dict[str, float]:
        """Updates on the first batches when prefill ends (DreamerV3 trains once on the prefill data
        before acting with the learned policy). A transition model (the ensemble) first takes its
        normaliser statistics from the prefill data."""
        if self.wm.train_on == "transitions":
            self.wm.set_statistics(self.buffer.all_transitions().to(self.device))
        m: dict[str, float] = {}
        for _ in range(self.pretrain_updates):
            m = self.train_step()
        return m

    def modules(self) -> dict[str, Any]:
        return {"world_model": self.wm, "wm_optim": self.wm_optim, "actor_critic": self.ac}


def from_config(cfg: Any, run_dir: Optional[str] = None) -> Dreamer:
    a = cfg.algo
    env, eval_env = make_envs(cfg)
    wm = build_model(cfg, env, "algo=dreamer")
    # actor / critic width and depth follow the model's dense size unless set (DreamerV3's size table)
    lcfg = to_dict(cfg.get("learner"))
    if lcfg.get("units") is None:
        lcfg["units"] = int(getattr(wm, "hidden", 512))
    if lcfg.get("layers") is None:
        lcfg["layers"] = max(1, int(getattr(wm, "layers", 2)))
    ac = build_learner({"learner": lcfg}, wm.feat_dim, env.single_action_space, "algo=dreamer")
    buffer = make_buffer(env, cfg, a.buffer_size, **replay_sampling(a, "algo=dreamer"))
    loop = loop_config(cfg)
    B, L = int(a.batch_size), int(a.batch_length)
    # DreamerV3 train_ratio = replayed steps per env step -> gradient updates per env step
    loop.train_ratio = float(a.train_ratio) / (B * L)
    return Dreamer(env, eval_env, buffer, wm, ac, loop, batch_size=B, batch_length=L, wm_opt=to_dict(a.get("wm_opt")),
                   precision=str(a.get("precision", "auto")), pretrain_updates=int(a.get("pretrain_updates", 1)),
                   video_every=int(a.get("video_every") or 0), run_dir=run_dir)
