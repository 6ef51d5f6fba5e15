"""numba kernels for the replay buffer's hot paths."""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(parallel=True, nogil=True, cache=True)
def _gather_rows(src, idx, dst):
    for i in numba.prange(idx.shape[0]):
        dst[i, :] = src[idx[i], :]


def gather_rows(src: np.ndarray, idx: np.ndarray, dst: np.ndarray) -> None:
    """dst[i] = src[idx[i]] for 2-D uint8 byte views, rows copied in parallel threads."""
    _gather_rows(src, idx, dst)
