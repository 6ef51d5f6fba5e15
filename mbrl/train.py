"""Train: `python -m mbrl.train env=<suite>/<task> model=<backbone> algo=<algo> seed=... steps=...`

Hydra 1.3 over `configs/` (composed by mbrl/config.py, the single config source); `--multirun`
works (e.g. `seed=0,1,2`). A user mistake (`mbrl.errors.UserError`: unknown env, suite, model, algo,
planner, learner or key, bad value or file) fails with one line naming what is valid, and exit code 2;
any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import importlib
import os
import shutil
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from mbrl.config import CONFIG_DIR, check_env_name, check_values, finalize, validate_overrides  # noqa: F401 (CONFIG_DIR: public)
from mbrl.errors import UserError

DEBUG = bool(os.environ.get("MBRL_DEBUG"))


IMPLIED_ENV = "MBRL_IMPLIED_OVERRIDES"  # the group choices main() added for hydra (not the user's words)


def _user_overrides() -> list[str]:
    """This job's overrides as the user wrote them (without the implied group choices main() added)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        task = list(HydraConfig.get().overrides.task)
    except Exception:  # not running under hydra
        return []
    added = [a for a in os.environ.get(IMPLIED_ENV, "").split("\n") if a]
    for a in added:
        if a in task:
            task.remove(a)
    return task


def make_run_dir(cfg: Any) -> Path:
    if cfg.get("run_dir"):
        path = Path(cfg.run_dir)
    else:
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        path = Path("runs") / str(cfg.algo.name) / str(cfg.env) / stamp
        n = 1
        while path.exists():
            path = path.with_name(f"{stamp}_{n}")
            n += 1
    path.mkdir(parents=True, exist_ok=True)
    return path


def _remove_run_dir(path: Path) -> None:
    """Remove a run dir made for a run that never started, and the parents it left empty (runs/<algo>/<env>)."""
    shutil.rmtree(path, ignore_errors=True)
    for parent in path.parents:
        if parent.name in ("", "runs", ".") or any(parent.iterdir()):
            break
        parent.rmdir()


def build(cfg: Any, run_dir: Optional[str | Path] = None):
    """Build the Algorithm that `cfg` names (no hydra needed: any OmegaConf/dict config)."""
    name = str(cfg.algo.name)
    try:
        module = importlib.import_module(f"mbrl.algos.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"mbrl.algos.{name}":
            raise UserError(f"algo {name!r} has a config but no module mbrl/algos/{name}.py") from None
        raise
    # every network an algo builds (learners, models) takes its initial weights from `seed`
    from mbrl.utils.seeding import seed_everything

    seed_everything(int(cfg.get("seed", 0) or 0))
    algo = module.from_config(cfg, run_dir)
    # what a checkpoint of this run must match, and whether it may hold the envs (exact resume)
    from mbrl import envs

    model = cfg.get("model")
    algo.meta = {"env": str(cfg.env), "model": str(model.name) if model is not None and model.get("name") else None}
    suite = str(cfg.env).split("/", 1)[0]
    pixels = (cfg.get("env_kwargs") or {}).get("pixels")
    algo.snapshot_envs = suite not in ("d4rl", "minari") and envs.snapshot_safe(str(cfg.env), pixels)
    return algo


#: what a resume may change (everything else is the run's own and comes from its config.yaml)
RESUME_KEYS = ("steps", "eval_every", "eval_episodes", "log_every", "checkpoint_every", "checkpoint_minutes", "threads",
               "device", "progress", "tensorboard", "resume")


def _resume_config(resume_dir: Path, cfg: Any, overrides: list[str], strict: bool = True) -> Any:
    """The saved config of the run in `resume_dir`, with the overrides a resume may change (`strict`: any
    other override is an error; a sweep's job, whose overrides made the run dir's name, is not strict)."""
    from omegaconf import OmegaConf

    saved = resume_dir / "config.yaml"
    if not saved.is_file():
        raise UserError(f"resume={resume_dir}: no config.yaml there (expected {saved})")
    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o]
    refused = [k for k in keys if k not in RESUME_KEYS and not k.startswith("hydra")]
    if refused and strict:
        raise UserError(f"resume cannot change {', '.join(refused)} (the run's own settings come from {saved}); "
                        f"a resume may change only: {', '.join(k for k in RESUME_KEYS if k != 'resume')}")
    try:
        old = OmegaConf.load(saved)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{saved} is damaged ({type(e).__name__})") from None
    for k in keys:
        if k in RESUME_KEYS and k != "resume":
            old[k] = cfg.get(k)
    return old


def run(cfg: Any) -> dict:
    import torch
    from omegaconf import OmegaConf

    from mbrl import sweep as sweeps
    from mbrl.utils.stop import Interrupted, handle_signals

    overrides = _user_overrides()
    resume = cfg.get("resume")
    job_dir = None if resume else sweeps.job_run_dir(overrides, cfg)  # a sweep preset's job: its own fixed dir
    if job_dir is not None:
        state = sweeps.read_status(job_dir)
        if state.get("state") == "done":
            print(f"skipped {job_dir}: finished ({state.get('env_steps')} env steps)", file=sys.stderr)
            return dict(state.get("metrics") or {})
        if sweeps.alive(state):
            print(f"skipped {job_dir}: running in process {state.get('pid')} on {state.get('host')} (if it is not, delete its "
                  f"status.json)", file=sys.stderr)
            return {}
        if (job_dir / "checkpoints").is_dir() and any((job_dir / "checkpoints").glob("*.pt")) and (job_dir / "config.yaml").is_file():
            resume = str(job_dir)  # an unfinished job of an earlier sweep (or this one, requeued): continue it
        elif job_dir.exists():
            shutil.rmtree(job_dir)  # started, never checkpointed: start again
    if resume:
        run_dir = Path(resume)
        cfg = _resume_config(run_dir, cfg, overrides, strict=job_dir is None)
    else:
        cfg = finalize(cfg, overrides)
        check_env_name(str(cfg.env))
        check_values(cfg, overrides)
        if job_dir is not None:
            cfg.run_dir = str(job_dir)
            if cfg.get("group") is None:
                cfg.group = sweeps.preset()
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    created = None
    if not resume:
        run_dir = created = make_run_dir(cfg)
    try:
        OmegaConf.save(cfg, run_dir / "config.yaml")
        if not resume:  # the command that made the run, for reports (config.yaml holds the full config)
            (run_dir / "command.txt").write_text(" ".join(["python -m mbrl.train", *overrides]) + "\n")
        algo = build(cfg, run_dir)
    except BaseException:
        if created is not None and job_dir is None:  # a run that fails before training leaves no run dir behind
            _remove_run_dir(created)  # (a sweep's job keeps it: its status.json names the error)
        raise
    print(f"run dir: {run_dir}", file=sys.stderr)
    if resume:
        print(f"resuming from {run_dir} at its last checkpoint", file=sys.stderr)
    sweeps.write_status(run_dir, "running")
    usr = sweeps.preemption_signal()  # under submitit: its preemption signal checkpoints too (then requeue)
    try:
        with handle_signals((signal.SIGINT, signal.SIGTERM) + ((usr,) if usr else ())):
            metrics = algo.run(resume=run_dir if resume else None)
    except Interrupted:
        raise  # recorded as `interrupted` by the CLI
    except Exception as e:  # noqa: BLE001 (recorded, then raised as before)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        sweeps.write_status(run_dir, "failed", error=(first if isinstance(e, UserError) else f"{type(e).__name__}: {first}"))
        raise
    summary = ", ".join(f"{k}={v:.2f}" for k, v in metrics.items())
    sweeps.write_status(run_dir, "done", env_steps=int(algo.env_steps), updates=int(algo.updates), metrics=metrics)
    print(f"done: {algo.env_steps} env steps, {algo.updates} updates; {summary}")
    return metrics


def _hydra_entry() -> None:
    import hydra

    from mbrl.utils.stop import Interrupted

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
    def _main(cfg):  # noqa: ANN001
        multirun = _is_multirun()
        from mbrl import sweep as sweeps

        try:
            run(cfg)
        except Interrupted as e:
            run_dir = Path(e.checkpoint).parent.parent if e.checkpoint else None
            if run_dir is not None:
                sweeps.write_status(run_dir, "interrupted", error=str(e), env_steps=e.step)
            if sweeps.requeue(e):  # under submitit: requeued (this process exits; the new job resumes)
                return
            print(f"{e}; continue with: python -m mbrl.train resume={run_dir or '<run dir>'}", file=sys.stderr)
            sys.exit(e.exit_code)  # a stop ends a sweep too
        except Exception as e:  # noqa: BLE001
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if not isinstance(e, UserError):
                msg = f"{type(e).__name__}: {msg}"
            job_dir = sweeps.job_run_dir(_user_overrides(), cfg) if multirun else None
            if job_dir is not None:  # the sweep's status and report list it with its error line
                sweeps.write_status(job_dir, "failed", error=msg)
            if DEBUG or (not multirun and not isinstance(e, UserError)):
                raise  # a bug outside a sweep keeps its traceback
            if not multirun:
                print(f"error: {msg}", file=sys.stderr)
                sys.exit(2)
            # in a sweep one bad job does not stop the others: record it, report all at the end
            _record_failure(msg)
            print(f"error (job {_job_label()}): {msg}", file=sys.stderr)

    _main()


FAILURES_ENV = "MBRL_SWEEP_FAILURES"  # the file where a sweep's failed jobs are recorded (one JSON line each)


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001
        return False


def _job_label() -> str:
    from hydra.core.hydra_config import HydraConfig

    try:
        hc = HydraConfig.get()
        return f"{hc.job.num}: {' '.join(hc.overrides.task)}"
    except Exception:  # noqa: BLE001
        return "?"


def _record_failure(msg: str) -> None:
    import json

    path = os.environ.get(FAILURES_ENV)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"job": _job_label(), "error": msg}) + "\n")


def _report_failures(path: str) -> int:
    """After a sweep: list the failed jobs with their error line; 1 if any failed, else 0."""
    import json

    p = Path(path)
    if not p.is_file():
        return 0
    rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    p.unlink(missing_ok=True)
    if not rows:
        return 0
    print(f"{len(rows)} job(s) of the sweep failed:", file=sys.stderr)
    for r in rows:
        print(f"  job {r['job']}: {r['error']}", file=sys.stderr)
    return 1


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        extra = validate_overrides(argv)
        os.environ[IMPLIED_ENV] = "\n".join(extra)
        argv = [*argv, *extra]
    except UserError as e:
        if DEBUG:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    # env_kwargs is an open dict of envs.make arguments: `env_kwargs.pixels=true` adds a key
    argv = [f"+{a}" if a.startswith("env_kwargs.") else a for a in argv]
    # keys of a group that hydra does not load by one name (swept in a multirun, `algo=mopo,morel`, or
    # implied differently per job) are force-added (`++algo.k=v`); each job's composition (finalize) puts
    # them over the group it loads. validate_overrides has checked them against every choice.
    groups = ("model", "algo", "planner", "learner")
    single = {k for k, v in (a.split("=", 1) for a in argv if "=" in a) if k in groups and "," not in v}
    argv = [f"++{a}" if "=" in a and "." in a.split("=", 1)[0] and a.split(".", 1)[0] in groups and a.split(".", 1)[0] not in single else a
            for a in argv]
    sys.argv = [sys.argv[0], *argv]
    from mbrl.utils.memory import keep_freed_memory

    keep_freed_memory()  # freed tensors stay in the heap: no page faults for each step's large activations
    multirun = any(a in ("-m", "--multirun") for a in argv)
    from mbrl.sweep import set_preemption_signal

    set_preemption_signal()  # submitit's preemption / time-limit signal: USR1 unless the user chose one
    if multirun and not os.environ.get(FAILURES_ENV):
        import tempfile

        # beside hydra's multirun dirs (runs/.multirun/, under the working dir), not in /tmp: SLURM jobs on other
        # nodes share the working dir, so their failures reach this process's list too
        shared = Path("runs") / ".multirun"
        shared.mkdir(parents=True, exist_ok=True)
        fd, failures = tempfile.mkstemp(prefix="mbrl-sweep-failures-", suffix=".jsonl", dir=str(shared.resolve()))
        os.close(fd)
        os.environ[FAILURES_ENV] = failures  # inherited by launcher processes (joblib, submitit_local)
    _hydra_entry()
    return _report_failures(os.environ[FAILURES_ENV]) if multirun else 0


if __name__ == "__main__":
    sys.exit(main())
