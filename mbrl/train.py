"""Train: `python -m mbrl.train env=<suite>/<task> model=<backbone> algo=<algo> seed=... steps=...`

Hydra 1.3 over `configs/`; `--multirun` works (e.g. `seed=0,1,2`). A user mistake (unknown env,
suite, model, algo or key) fails at once with one line naming what is valid, and exit code 2.
"""
from __future__ import annotations

import importlib
import os
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
GROUPS = ("model", "algo", "sweep")
DEBUG = bool(os.environ.get("MBRL_DEBUG"))


class ConfigError(ValueError):
    """A user mistake in the command line or config."""


def group_options(group: str) -> list[str]:
    d = CONFIG_DIR / group
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def _load_yaml(group: str, name: str):
    from omegaconf import OmegaConf

    path = CONFIG_DIR / group / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown {group} {name!r}; valid: {', '.join(group_options(group)) or '(none)'}")
    return OmegaConf.load(path)


def _is_simple_list(value: str) -> bool:
    return not re.search(r"[()\[\]{}]", value)


def _keys_of(cfg: Any, prefix: str = "") -> set[str]:
    """All dotted key paths of a config."""
    from omegaconf import DictConfig

    out = set()
    for k, v in cfg.items():
        path = f"{prefix}{k}"
        out.add(path)
        if isinstance(v, DictConfig):
            out |= _keys_of(v, path + ".")
    return out


def validate_overrides(argv: list[str]) -> list[str]:
    """Check names and keys before hydra starts, so mistakes get one line (ConfigError). Returns the
    group choices to add for hydra: `algo=dreamer` when `model=rssm algo.x=...` leaves the algo implied."""
    from omegaconf import OmegaConf

    base = OmegaConf.load(CONFIG_DIR / "config.yaml")
    top = set(base.keys()) - {"defaults", "hydra"}
    chosen: dict[str, list[str]] = {}
    pairs = []
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        if key.startswith(("+", "~")) or key.startswith("hydra") or key.startswith("++"):
            continue
        pairs.append((key, value))
        if key in GROUPS:
            names = [v.strip() for v in value.split(",")] if _is_simple_list(value) else []
            for name in names:
                if name not in ("null", "none") and name not in group_options(key):
                    raise ConfigError(f"unknown {key} {name!r}; valid: {', '.join(group_options(key))}")
            chosen[key] = [n for n in names if n not in ("null", "none")]
    # the algo a model implies (model=rssm -> dreamer) and the model an algo implies, as compose() fills
    # them in; a `group.key=` override of an implied group names the group for hydra (returned)
    implied: dict[str, list[str]] = {}
    if not chosen.get("algo"):  # compose(): the model's default_algo, else the config's default_algo
        default = str(base.default_algo)
        implied["algo"] = sorted({_load_yaml("model", m).get("default_algo") or default for m in chosen.get("model", [])} or {default})
    algos = chosen.get("algo") or implied["algo"]
    if not chosen.get("model"):
        implied["model"] = sorted({m for m in (_load_yaml("algo", a).get("default_model") for a in algos) if m})
    extra = []
    for head, names in implied.items():
        if any(k.startswith(head + ".") for k, _ in pairs) and len(names) == 1:
            chosen[head] = names
            extra.append(f"{head}={names[0]}")
    for key, value in pairs:
        head = key.split(".", 1)[0]
        if key == "env" and _is_simple_list(value):
            for name in value.split(","):
                check_env_name(name.strip())
        if head in ("model", "algo") and "." in key:
            names = chosen.get(head, [])
            if not names:
                raise ConfigError(f"{key!r} sets a {head} key, but no {head} is named or implied; add {head}=<name> (valid: {', '.join(group_options(head))})")
            for name in names:
                valid = _keys_of(_load_yaml(head, name))
                sub = key.split(".", 1)[1]
                if sub not in valid:
                    top_keys = sorted(k for k in valid if "." not in k)
                    raise ConfigError(f"unknown key {key!r} for {head}={name}; valid: {', '.join(top_keys)}")
        elif head not in GROUPS and head not in top:
            raise ConfigError(f"unknown key {key!r}; valid: {', '.join(sorted(top | set(GROUPS)))} (prefix with + to add a new key)")
        elif head in top and "." in key and head != "env_kwargs":
            raise ConfigError(f"{head!r} is not a group of keys; use {head}=<value>")
    return extra


def check_env_name(name: str) -> None:
    """Fail early on an unknown suite or task (datasets are checked when loaded)."""
    import envs

    suite = name.split("/", 1)[0] if "/" in name else None
    if suite in ("d4rl", "minari"):
        return
    envs.check(name)


def _user_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except Exception:  # not running under hydra
        return []


def _choice(group: str) -> Optional[str]:
    from hydra.core.hydra_config import HydraConfig

    try:
        c = HydraConfig.get().runtime.choices.get(group)
    except Exception:
        return None
    return None if c in (None, "null", "None") else c


def compose(cfg: Any, overrides: list[str]) -> Any:
    """Fill in what hydra's defaults cannot express: the algo implied by the model (and the model
    implied by the algo), and the algo's per-suite defaults (`suites:`), below the user's overrides."""
    from omegaconf import OmegaConf, open_dict

    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(cfg):
        if cfg.get("algo") is None:
            name = (cfg.model or {}).get("default_algo") if cfg.get("model") is not None else None
            cfg.algo = _load_yaml("algo", name or cfg.default_algo)
        if cfg.get("model") is None and cfg.algo.get("default_model"):
            cfg.model = _load_yaml("model", cfg.algo.default_model)
        suite = str(cfg.env).split("/", 1)[0]
        suites = cfg.algo.get("suites") or {}
        if suite in suites:
            user_keys = {o.split("=", 1)[0].lstrip("+") for o in overrides if "=" in o}
            for k, v in suites[suite].items():
                # `model.x` keys go to the model; everything else is an algo key (loop keys such
                # as steps/train_ratio live in the algo config; a top-level `steps=` still wins)
                path = k if k.startswith("model.") else f"algo.{k}"
                if path not in user_keys and k not in user_keys:
                    OmegaConf.update(cfg, path, v, merge=True)
    return cfg


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
            raise ConfigError(f"algo {name!r} has a config but no module mbrl/algos/{name}.py") from None
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
            raise ConfigError(f"resume={resume_dir}: no config.yaml there (expected {saved})")
        new_steps = cfg.get("steps")
        cfg = OmegaConf.load(saved)
        if new_steps is not None:
            cfg.steps = new_steps
        run_dir = resume_dir
    else:
        cfg = compose(cfg, overrides)
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
        except (ValueError, FileNotFoundError) as e:
            if DEBUG:
                raise
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"error: {msg}", file=sys.stderr)
            sys.exit(2)

    _main()


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        argv = [*argv, *validate_overrides(argv)]
    except ValueError as e:
        if DEBUG:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    # env_kwargs is an open dict of envs.make arguments: `env_kwargs.pixels=true` adds a key
    argv = [f"+{a}" if a.startswith("env_kwargs.") else a for a in argv]
    sys.argv = [sys.argv[0], *argv]
    from mbrl.utils.memory import keep_freed_memory

    keep_freed_memory()  # freed tensors stay in the heap: no page faults for each step's large activations
    _hydra_entry()
    return 0


if __name__ == "__main__":
    sys.exit(main())
