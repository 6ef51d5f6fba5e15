"""Train: `python -m mbrl.train env=<suite>/<task> model=<backbone> algo=<algo> seed=... steps=...`

Hydra 1.3 over `configs/` (composed by mbrl/config.py, the single config source); `--multirun`
works (e.g. `seed=0,1,2`). A user mistake (`mbrl.errors.UserError`: unknown env, suite, model, algo,
planner, learner or key, bad value or file) fails with one line naming what is valid, and exit code 2;
any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import importlib
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from mbrl.config import CONFIG_DIR, check_env_name, finalize, validate_overrides  # noqa: F401 (CONFIG_DIR: public)
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
    return module.from_config(cfg, run_dir)


def run(cfg: Any) -> dict:
    import torch
    from omegaconf import OmegaConf

    overrides = _user_overrides()
    resume = cfg.get("resume")
    if resume:
        resume_dir = Path(cfg.resume)
        saved = resume_dir / "config.yaml"
        if not saved.is_file():
            raise UserError(f"resume={resume_dir}: no config.yaml there (expected {saved})")
        new_steps = cfg.get("steps")
        cfg = OmegaConf.load(saved)
        if new_steps is not None:
            cfg.steps = new_steps
        run_dir = resume_dir
    else:
        cfg = finalize(cfg, overrides)
        check_env_name(str(cfg.env))
        run_dir = make_run_dir(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    OmegaConf.save(cfg, run_dir / "config.yaml")
    if not resume:  # the command that made the run, for reports (config.yaml holds the full config)
        (run_dir / "command.txt").write_text(" ".join(["python -m mbrl.train", *overrides]) + "\n")
    algo = build(cfg, run_dir)
    print(f"run dir: {run_dir}", file=sys.stderr)
    if resume:
        print(f"resuming from {run_dir} at its last checkpoint", file=sys.stderr)
    metrics = algo.run(resume=run_dir if resume else None)
    summary = ", ".join(f"{k}={v:.2f}" for k, v in metrics.items())
    print(f"done: {algo.env_steps} env steps, {algo.updates} updates; {summary}")
    return metrics


def _hydra_entry() -> None:
    import hydra

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
    def _main(cfg):  # noqa: ANN001
        try:
            run(cfg)
        except UserError as e:
            if DEBUG:
                raise
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"error: {msg}", file=sys.stderr)
            sys.exit(2)

    _main()


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
    _hydra_entry()
    return 0


if __name__ == "__main__":
    sys.exit(main())
