"""mbrl.utils.memory.keep_freed_memory: a freed large tensor's pages are reused, not faulted in anew."""
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import resource, torch
from mbrl.utils.memory import keep_freed_memory
on = keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():  # a training step's large activations: allocated, touched, all freed at the end
    xs = [torch.ones(n * 2**20 // 4) for n in (48, 64, 40, 64)]  # MiB each, above glibc's 32 MiB mmap threshold
    del xs
for _ in range(4):  # the heap settles (glibc's best fit over aligned blocks takes a few steps)
    step()
f0 = faults()
for _ in range(4):
    step()
print(int(on), faults() - f0)
"""


def _run(keep: str) -> tuple[int, int]:
    env = dict(os.environ, MBRL_KEEP_MEMORY=keep)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_keep_freed_memory_reuses_pages():
    on, faults_on = _run("1")
    off, faults_off = _run("0")
    assert on == 1 and off == 0
    pages = 4 * (48 + 64 + 40 + 64) * 2**20 // 4096  # 4 steps: 221184
    assert faults_off > 0.9 * pages, faults_off  # default glibc: fresh mmaps, every page faulted in again
    assert faults_on < 0.1 * pages, faults_on  # kept heap: later steps reuse the pages of earlier ones
