"""`Batch`: a dict of tensors with leading dims [B] (transitions) or [B, T] (sequences).

Field meanings (see ReplayBuffer for the exact alignment of each sampler):
  obs, action, reward, next_obs, terminated, truncated, is_first (+ is_last for sequences).
`obs` / `next_obs` may themselves be dicts of tensors (gymnasium Dict observation spaces).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch


def tree_map(fn: Callable[[Any], Any], x: Any) -> Any:
    """Apply `fn` to every leaf of nested dicts / lists / tuples."""
    if isinstance(x, dict):
        return type(x)({k: tree_map(fn, v) for k, v in x.items()}) if not isinstance(x, Batch) else Batch({k: tree_map(fn, v) for k, v in x.items()})
    if isinstance(x, (list, tuple)):
        return type(x)(tree_map(fn, v) for v in x)
    return fn(x)


class Batch(dict):
    """dict of tensors with attribute access: `batch.obs`, `batch["reward"]`."""

    __slots__ = ()

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"Batch has no field {key!r}; fields: {sorted(self)}") from None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return tree_map(lambda t: t.to(device, non_blocking=non_blocking) if torch.is_tensor(t) else t, self)

    @staticmethod
    def from_numpy(arrays: dict, device: torch.device | str = "cpu") -> "Batch":
        def conv(a):
            t = torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else torch.as_tensor(a)
            return t.to(device, non_blocking=True) if str(device) != "cpu" else t
        return Batch({k: tree_map(conv, v) for k, v in arrays.items()})

    @property
    def batch_shape(self) -> torch.Size:
        leaf = self["reward"] if "reward" in self else next(iter(self.values()))
        return leaf.shape
