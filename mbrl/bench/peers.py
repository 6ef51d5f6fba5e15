"""Peer libraries for side-by-side benchmarks, each installed from PyPI into its own venv.

`peer_python("sheeprl")` returns the python executable of `.bench_venvs/sheeprl`, creating it on
first use (torch pinned to the local CPU build through constraints.txt). Peer code runs only in a
subprocess of that interpreter; nothing of it is imported into mbrl.
"""
from __future__ import annotations

import fcntl
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENVS = ROOT / ".bench_venvs"

PEERS: dict[str, list[list[str]]] = {
    # each inner list is one `pip install` call, run in order
    "sheeprl": [["torch==2.13.0", "sheeprl==0.8.4"]],
    # d3rlpy 2.8.1 pins gymnasium 1.0.0 (its own venv keeps it away from ours); h5py reads the datasets
    "d3rlpy": [["torch==2.13.0", "d3rlpy==2.8.1", "h5py"]],
    # mbrl-lib 0.2.0 needs hydra-core/omegaconf forced to versions that run on Python 3.11
    # (its pins omegaconf<2.1 / hydra-core==1.0.3 cannot be resolved by current pip: install its
    # other requirements, then mbrl itself with --no-deps)
    "mbrllib": [
        ["torch==2.13.0", "numpy<2", "termcolor", "matplotlib", "gymnasium==0.26.3", "tqdm", "imageio", "PyYAML"],
        ["--no-deps", "mbrl==0.2.0", "hydra-core==1.3.2", "omegaconf==2.3.0", "antlr4-python3-runtime==4.9.3"],
    ],
}


def peer_python(name: str) -> Path:
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; valid: {', '.join(PEERS)}")
    venv = VENVS / name
    py = venv / "bin" / "python"
    marker = venv / ".installed"
    VENVS.mkdir(exist_ok=True)
    with open(VENVS / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
            for args in PEERS[name]:
                subprocess.run([str(py), "-m", "pip", "install", "-q", *args], check=True)
            marker.write_text(time.strftime("%Y-%m-%d %H:%M:%S"))
    return py


def run_peer(name: str, script: str, *args: str, timeout: float | None = None) -> dict:
    """Run `script` (python source) with the peer's interpreter; it must print one JSON line last.
    Its stderr is passed through line by line (progress of long peer runs), its stdout is parsed."""
    return run_python(peer_python(name), name, script, *args, timeout=timeout)


def run_python(py: str | Path, name: str, script: str, *args: str, timeout: float | None = None) -> dict:
    """`run_peer` with a given interpreter `py` (a venv made elsewhere); `name` labels its stderr."""
    import threading

    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    proc = subprocess.Popen([str(py), "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd="/tmp")
    stdout: list[str] = []
    reader = threading.Thread(target=lambda: stdout.append(proc.stdout.read()), daemon=True)
    reader.start()
    timed_out: list[bool] = []
    timer = threading.Timer(timeout, lambda: (timed_out.append(True), proc.kill())) if timeout else None
    if timer:
        timer.start()
    tail: list[str] = []
    try:
        for line in proc.stderr:
            sys.stderr.write(f"[{name}] {line}")
            sys.stderr.flush()
            tail = (tail + [line])[-100:]
        proc.wait()
        reader.join()
    finally:
        if timer:
            timer.cancel()
    if proc.returncode != 0:
        why = f"timed out after {timeout:.0f} s" if timed_out else f"exit {proc.returncode}"
        raise RuntimeError(f"peer {name} failed ({why}):\n{''.join(tail)[-4000:]}")
    return json.loads("".join(stdout).strip().splitlines()[-1])


def machine() -> str:
    """One line describing this machine, for results files."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, torch threads {torch.get_num_threads()}"


def stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def write_result(path: str | Path, title: str, command: str, body: str) -> Path:
    """Write a results markdown file with its command, machine and date (never over an existing
    file unless `--overwrite`: mbrl/bench/common.py)."""
    from mbrl.bench.common import claim

    p = claim(path)[0]
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(f"# {title}\n\n- command: `{command}`\n- machine: {machine()}\n- date: {stamp()}\n\n{body.rstrip()}\n")
    return p
