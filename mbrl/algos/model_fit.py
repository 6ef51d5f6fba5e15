"""Fitting a world model on a replay buffer: the one place for what is generic about it.

Used by every algorithm that refits a model on its data (PETS, MBPO, the offline methods); Dreamer
trains its model online with the same `loss`. The optimiser lives here (it belongs to the algorithm,
not to the model) and is checkpointed with the fitter.

- Models trained on transitions (`model.train_on == "transitions"`, the ensemble): every stored
  transition, a random hold-out split (`holdout_ratio`, at most `max_holdout`), normaliser statistics
  from the training split (`model.set_statistics`), per-member bootstrap samples when the model has
  members (`model.num_members > 1`: a batch is [E, b] rows, member e trains on its own rows), at most
  `epochs` epochs with early stopping when no member improved its held-out score
  (`model.member_scores`) by `improvement` (relative) for `patience` epochs, each member's best
  weights restored (`model.member_parameters`) and the elites chosen (`model.select_elites`).
  `min_updates` / `max_updates` bound the gradient steps. Splits and bootstraps are drawn from the model's
  own generator where it keeps one (`WorldModel.generator`), else from the fitter's (seeded) one.
- Models trained on sequences (latent backbones): `seq_updates` gradient steps per fit on sampled
  sequence batches [seq_batch, seq_length] (the loss itself handles episode starts).
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Optional

import torch

from mbrl.data.batch import Batch
from mbrl.errors import UserError
from mbrl.models.base import WorldModel
from mbrl.utils.optim import OPT_KEYS, Optim

#: keys of an algo's `fit:` block (configs/algo/_shared/fit.yaml)
FIT_KEYS = ("epochs", "batch_size", "holdout_ratio", "max_holdout", "patience", "improvement", "bootstrap", "max_updates",
            "min_updates", "seq_batch", "seq_length", "seq_updates", "opt")


class ModelFitter:
    def __init__(self, model: WorldModel, seed: int = 0, epochs: int = 50, batch_size: int = 256, holdout_ratio: float = 0.2,
                 max_holdout: int = 5000, patience: int = 5, improvement: float = 0.01, bootstrap: bool = True,
                 max_updates: Optional[int] = None, min_updates: int = 0, seq_batch: int = 16, seq_length: int = 32,
                 seq_updates: int = 100, opt: Optional[dict] = None):
        if not 0.0 <= holdout_ratio < 1.0:
            raise UserError(f"algo.fit.holdout_ratio={holdout_ratio}; valid: 0 <= holdout_ratio < 1")
        if int(batch_size) < 1 or int(seq_batch) < 1 or int(seq_length) < 2:
            raise UserError(f"algo.fit: batch_size={batch_size}, seq_batch={seq_batch}, seq_length={seq_length}; valid: >= 1, >= 1, >= 2")
        o = dict(kind="adam", lr=1e-3, eps=1e-8, clip=0.0)
        o.update(opt or {})
        bad = sorted(set(o) - set(OPT_KEYS))
        if bad:
            raise UserError(f"unknown algo.fit.opt keys {bad}; valid: {', '.join(OPT_KEYS)}")
        self.model = model
        self.optim = Optim(model.parameters(), **o)
        self.epochs, self.batch_size = int(epochs), int(batch_size)
        self.holdout_ratio, self.max_holdout = float(holdout_ratio), int(max_holdout)
        self.patience, self.improvement, self.bootstrap = int(patience), float(improvement), bool(bootstrap)
        self.max_updates = None if max_updates is None else int(max_updates)
        self.min_updates = int(min_updates)
        self.seq_batch, self.seq_length, self.seq_updates = int(seq_batch), int(seq_length), int(seq_updates)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.autocast: Any = contextlib.nullcontext

    # ------------------------------------------------------------------ entry points
    def fit(self, buffer: Any, transitions: Optional[Batch] = None) -> dict[str, float]:
        """Fit on everything `buffer` (a ReplayBuffer) holds; returns metrics. `transitions`: the buffer's
        `all_transitions()` when the caller already gathered them (not gathered twice)."""
        if self.model.train_on == "transitions":
            return self.fit_transitions(buffer.all_transitions() if transitions is None else transitions)
        return self.fit_sequences(buffer)

    def update(self, batch: Batch) -> tuple[dict[str, float], Any]:
        """One gradient step on `batch`; (metrics, posterior states)."""
        self.model.train()
        with self.autocast():
            loss, metrics, post = self.model.loss(batch)
        metrics["model/grad_norm"] = self.optim.step(loss)
        return metrics, post

    # ------------------------------------------------------------------ sequences
    def fit_sequences(self, buffer: Any) -> dict[str, float]:
        metrics: dict[str, float] = {}
        n = max(self.seq_updates, self.min_updates)
        if self.max_updates is not None:
            n = min(n, self.max_updates)
        for _ in range(max(n, 1)):
            batch = buffer.sample_sequences(self.seq_batch, self.seq_length)
            metrics, _ = self.update(batch)
        self.model.eval()
        metrics["model/updates"] = float(max(n, 1))
        return metrics

    # ------------------------------------------------------------------ transitions
    def fit_transitions(self, data: Batch) -> dict[str, float]:
        model = self.model
        dev = next(model.parameters()).device
        data = Batch({k: data[k].to(dev) for k in ("obs", "action", "reward", "next_obs", "terminated")})
        n = data.reward.shape[0]
        g = model.generator if model.generator is not None else self.generator  # one stream per seeded model
        perm = torch.randperm(n, generator=g).to(dev)
        n_val = min(int(n * self.holdout_ratio), self.max_holdout) if n >= 10 else 0
        val = Batch({k: v[perm[:n_val]] for k, v in data.items()})
        tr_idx = perm[n_val:]
        model.set_statistics(Batch({k: v[tr_idx] for k, v in data.items()}))
        ntr = tr_idx.numel()
        E = model.num_members
        members = model.member_parameters()
        best = model.member_scores(val) if n_val else None
        best_state = copy.deepcopy([p.detach() for p in members]) if n_val else None
        since, updates, epoch = 0, 0, 0
        metrics: dict[str, float] = {}
        model.train()
        per_epoch = max(1, -(-ntr // self.batch_size))
        epochs = max(self.epochs, -(-self.min_updates // per_epoch))
        done = False
        for epoch in range(epochs):
            if E > 1 and self.bootstrap:
                idx = torch.randint(ntr, (E, ntr), generator=g).to(dev)
            elif E > 1:
                idx = torch.stack([torch.randperm(ntr, generator=g) for _ in range(E)]).to(dev)
            else:
                idx = torch.randperm(ntr, generator=g).to(dev)
            idx = tr_idx[idx]
            for s in range(0, ntr, self.batch_size):
                bi = idx[..., s : s + self.batch_size]  # [E, b] per member, or [b]
                loss, metrics, _ = model.loss(Batch({k: v[bi] for k, v in data.items()}))
                self.optim.step(loss)
                updates += 1
                if self.max_updates is not None and updates >= self.max_updates:
                    done = True
                    break
            if done:
                break
            if n_val:
                score = model.member_scores(val)
                improved = (best - score) / best.clamp(min=1e-12) > self.improvement
                if improved.any():
                    with torch.no_grad():
                        for keep, p in zip(best_state, members):
                            keep[improved] = p.detach()[improved] if p.dim() and p.shape[0] == E else p.detach()
                    best = torch.where(improved, score, best)
                    since = 0
                else:
                    since += 1
                    if since >= self.patience and updates >= self.min_updates:
                        break
        if n_val:
            with torch.no_grad():
                for keep, p in zip(best_state, members):
                    p.copy_(keep)
            model.select_elites(best)
            metrics["model/val_score"] = float(best.mean())
        metrics.update({"model/epochs": float(epoch + 1), "model/updates": float(updates), "model/train_size": float(ntr)})
        model.eval()
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"optim": self.optim.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, sd: dict) -> None:
        self.optim.load_state_dict(sd["optim"])
        self.generator.set_state(sd["generator"])


def fitter_from_config(model: WorldModel, fit_cfg: Optional[dict], seed: int) -> ModelFitter:
    cfg = {k: v for k, v in dict(fit_cfg or {}).items() if v is not None}
    bad = sorted(set(cfg) - set(FIT_KEYS))
    if bad:
        raise UserError(f"unknown algo.fit keys {bad}; valid: {', '.join(FIT_KEYS)}")
    if "opt" in cfg:
        cfg["opt"] = dict(cfg["opt"])
    return ModelFitter(model, seed=seed, **cfg)
