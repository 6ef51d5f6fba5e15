"""Sweeps: the run directory of each job, its status, preemption under submitit, and a status command.

    python -m mbrl.train --multirun sweep=smoke launcher=joblib     # runs/sweeps/smoke/env=toy-point,seed=0, ...
    python -m mbrl.sweep runs/sweeps/smoke                          # runs done / running / failed, errors

A job of a `sweep=<preset>` multirun writes to `runs/sweeps/<preset>/<its overrides>` (or `<run_dir>/<its
overrides>` when `run_dir=` is given): the name holds the swept keys and the seed (`env=toy-point,seed=1`), so
the runs of a sweep are told apart at a glance and a job finds its own directory again. Each run dir holds
`status.json` (`state`: running / done / failed / interrupted, with the error line, pid, host, attempts).
Running a sweep again skips the jobs that are done and resumes the unfinished ones from their last
checkpoint (mbrl.train's resume); a job that never checkpointed starts again.

Preemption under submitit (launcher=submitit_local / submitit_slurm): the job's preemption signal (SIGUSR1:
mbrl.train sets SUBMITIT_PREEMPT_SIGNAL=USR1 unless it is set) or SIGTERM asks the loop to stop; it writes a
checkpoint, and the job hands itself back to submitit's checkpoint/requeue protocol (hydra-submitit's
launcher has the `checkpoint()` method that resubmits the same job), so the requeued job starts again in the
same run dir and resumes there.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Optional

from mbrl.errors import UserError

STATUS = "status.json"
#: folders inside a run dir or a sweep that are not runs (hydra's multirun records, checkpoints, trackers' stores)
NOT_RUNS = {".multirun", "checkpoints", "tb", "wandb", "mlruns"}
STATES = ("done", "running", "interrupted", "failed", "lost", "unknown")
#: overrides that do not change what a job computes (or name the sweep itself): left out of its dir name
NAME_SKIP = {"sweep", "launcher", "run_dir", "resume", "progress", "threads", "device", "tensorboard", "checkpoint_minutes",
             "log_every", "logger", "group"}


# ----- where a job runs ----------------------------------------------------------------------------
def preset() -> Optional[str]:
    """The `sweep=` preset of this hydra multirun job, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return None
        name = hc.runtime.choices.get("sweep")
    except Exception:  # noqa: BLE001 (not under hydra)
        return None
    return None if name in (None, "null", "none", "None") else str(name)


def _clean(value: str) -> str:
    value = value.replace("/", "-")
    return "".join(c if c.isalnum() or c in "-_.+:@" else "_" for c in value)


def job_name(overrides: list[str], seed: Any = 0) -> str:
    """`env=toy-point,seed=1`: a job's overrides (the swept keys and any other key it sets), sorted, seed last."""
    items: dict[str, str] = {}
    for o in overrides:
        if "=" not in o:
            continue
        k, v = o.split("=", 1)
        k = k.lstrip("+~")
        if k.startswith("hydra") or k in NAME_SKIP:
            continue
        items[k] = v
    items.setdefault("seed", str(seed))
    name = ",".join(f"{_clean(k)}={_clean(items[k])}" for k in sorted(items, key=lambda k: (k == "seed", k)))
    if len(name) > 200:  # file names stop at 255 bytes: keep a readable head and a hash of the whole
        name = name[:180] + ",h=" + hashlib.sha1(name.encode()).hexdigest()[:12]
    return name


def job_run_dir(overrides: list[str], cfg: Any) -> Optional[Path]:
    """The run dir of a `sweep=` preset's job (None outside one)."""
    name = preset()
    if name is None:
        return None
    root = Path(cfg.run_dir) if cfg.get("run_dir") else Path("runs") / "sweeps" / name
    return root / job_name(overrides, cfg.get("seed", 0))


# ----- status --------------------------------------------------------------------------------------
def read_status(run_dir: Path) -> dict:
    p = Path(run_dir) / STATUS
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except ValueError:
        return {}


def write_status(run_dir: Path, state: str, **fields: Any) -> None:
    """Update `status.json` (atomic): the state, this process and host, the time; `running` counts attempts."""
    from mbrl.utils.checkpoint import atomic_write

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    st = read_status(run_dir)
    if state == "running":
        st["attempts"] = int(st.get("attempts", 0)) + 1
        st.setdefault("started", time.strftime("%Y-%m-%d %H:%M:%S"))
        st.pop("error", None)
    st.update(state=state, pid=os.getpid(), host=socket.gethostname(), updated=time.strftime("%Y-%m-%d %H:%M:%S"))
    job = _job_id()
    if job:
        st["job_id"] = job
    for k, v in fields.items():
        st[k] = {a: float(b) for a, b in v.items()} if isinstance(v, dict) else v
    atomic_write(run_dir / STATUS, lambda p: p.write_text(json.dumps(st, indent=1) + "\n"))


def _job_id() -> Optional[str]:
    return os.environ.get("SUBMITIT_LOCAL_JOB_ID") or os.environ.get("SLURM_JOB_ID")


def alive(st: dict) -> bool:
    """Whether a `running` status belongs to a live process other than this one: on this host, its pid is
    alive; on another host it is taken as alive, unless it is this job's own earlier attempt (a requeued
    SLURM job keeps its job id)."""
    if st.get("state") != "running" or not st.get("pid") or int(st["pid"]) == os.getpid():
        return False
    if st.get("job_id") and st.get("job_id") == _job_id():
        return False
    if st.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(st["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----- preemption under submitit ---------------------------------------------------------------------
PREEMPT_ENV = "SUBMITIT_PREEMPT_SIGNAL"


def set_preemption_signal(default: str = "USR1") -> None:
    """Make `default` submitit's preemption signal unless $SUBMITIT_PREEMPT_SIGNAL names one (submitit reads it
    when imported: the launcher's `sbatch --signal=USR1@<signal_delay_s>` and its jobs' handlers agree)."""
    os.environ.setdefault(PREEMPT_ENV, default)


def preemption_signal() -> Optional[int]:
    """submitit's preemption signal when this process is a submitit job, else None."""
    if "submitit" not in sys.modules:  # the launcher imported it in the job; nothing to ask otherwise
        return None
    try:
        from submitit import JobEnvironment

        JobEnvironment()
        return int(JobEnvironment._usr_sig())
    except Exception:  # noqa: BLE001 (RuntimeError: not a submitit job)
        return None


def requeue(interrupted: Any) -> bool:
    """After the loop checkpointed on the preemption signal or SIGTERM in a submitit job: hand over to
    submitit's handler (restored when `handle_signals` ended), which calls the launcher's `checkpoint()`,
    requeues the job and exits this process. False (nothing done) outside submitit or for other stops."""
    usr = preemption_signal()
    if usr is None or interrupted.exit_code - 128 not in (usr, signal.SIGTERM):
        return False
    handler = signal.getsignal(usr)
    if not callable(handler):
        return False
    print(f"{interrupted}; requeueing the job (it resumes from that checkpoint)", file=sys.stderr, flush=True)
    handler(usr, None)  # submitit: checkpoint + requeue + sys.exit
    return True


# ----- status of a sweep ---------------------------------------------------------------------------
def _last_step(run_dir: Path) -> Optional[int]:
    p = run_dir / "metrics.csv"
    if not p.is_file():
        return None
    with open(p, "rb") as f:
        f.seek(max(0, p.stat().st_size - 4096))
        lines = f.read().decode(errors="replace").strip().splitlines()
    for line in reversed(lines):
        try:
            return int(float(line.split(",", 1)[0]))
        except ValueError:
            continue
    return None


def job_dirs(root: Path) -> list[Path]:
    """Run dirs (status.json or config.yaml) at or under `root`."""
    out = set()
    for marker in (STATUS, "config.yaml"):
        if (root / marker).is_file():
            out.add(root)
        out.update(p.parent for p in root.rglob(marker) if not NOT_RUNS & set(p.relative_to(root).parts))
    return sorted(out)


def summarize(root: Path) -> list[dict]:
    """One row per run dir under `root`: name, state (done / running / interrupted / failed / lost: `running`
    but its process is gone / unknown: no status.json), step of steps, attempts, error line."""
    from omegaconf import OmegaConf

    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such sweep directory")
    rows = []
    for d in job_dirs(root):
        st = read_status(d)
        state = st.get("state") or "unknown"  # no status.json: a run dir from outside a sweep, or an older one
        if state == "running" and not alive(st):
            state = "lost"  # its process is gone without a word (killed): a re-run resumes it
        steps = None
        if (d / "config.yaml").is_file():
            cfg = OmegaConf.load(d / "config.yaml")
            steps = cfg.get("steps") or (cfg.algo.get("steps") if cfg.get("algo") is not None else None)
        step = st.get("env_steps") if state == "done" else _last_step(d)
        rows.append({"run": str(d.relative_to(root)) if d != root else d.name, "state": state, "step": step, "steps": steps,
                     "attempts": st.get("attempts", 0), "error": st.get("error") if state in ("failed", "interrupted") else None})
    if not rows:
        raise UserError(f"no run directories (status.json or config.yaml) under {root}")
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mbrl.sweep", description="Status of a sweep: runs done / running / failed, with errors.")
    p.add_argument("root", type=Path, help="a sweep directory, e.g. runs/sweeps/smoke")
    a = p.parse_args(argv)
    try:
        rows = summarize(a.root)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    counts = {s: sum(r["state"] == s for r in rows) for s in STATES}
    print(f"{a.root}: {len(rows)} runs: " + ", ".join(f"{counts[s]} {s}" for s in STATES))
    width = max(len(r["run"]) for r in rows)
    for r in rows:
        prog = f"{r['step'] if r['step'] is not None else '-'}/{r['steps'] if r['steps'] is not None else '?'}"
        line = f"  {r['run']:<{width}}  {r['state']:<11}  {prog:>13}  attempts {r['attempts']}"
        if r["error"]:
            line += f"  {r['error']}"
        print(line)
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
