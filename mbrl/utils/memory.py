"""Keep freed memory in the process heap (glibc) so that large tensors are not page-faulted in anew.

On CPU, PyTorch allocates each large activation with malloc. glibc serves blocks above its mmap
threshold (at most 32 MiB) with a fresh mmap and unmaps them on free, so every training step pays one
page fault per 4 KiB of every large activation again (a [16, 1024, 1536] fp32 tensor is 25,000 pages).
`keep_freed_memory()` turns mmap allocations off and raises the trim threshold: freed blocks stay in
the heap and are reused. The process keeps its peak memory instead of returning it to the system.
The CLIs (`python -m mbrl.train`, `python -m mbrl.bench`) call it; `MBRL_KEEP_MEMORY=0` turns it off.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# (mallopt parameter, value): no mmap'ed blocks, never trim the heap top (the largest int mallopt takes)
SETTINGS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))
_done = False


def keep_freed_memory() -> bool:
    """Apply the glibc settings once; True when they are in effect (Linux with glibc, not turned off)."""
    global _done
    if _done:
        return True
    if os.environ.get("MBRL_KEEP_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all(mallopt(param, value) == 1 for param, value in SETTINGS)
    _done = ok
    return ok
