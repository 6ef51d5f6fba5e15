"""The single config source: `configs/` composed by hydra, plus the rules hydra's defaults cannot express.

    cfg = mbrl.config.compose(["env=toy/point", "model=rssm", "algo=pets"])   # as the CLI does
    algo = mbrl.train.build(cfg)

Groups: `model` (backbones), `algo`, `planner`, `learner`, `sweep` (task x seed presets), `launcher`
(how a --multirun runs its jobs: hydra launcher plugins, optional extras). An algo config composes shared
blocks with hydra defaults lists (`configs/algo/_shared/*.yaml`: the model fit, the offline and the
model-based offline keys) and names what it uses:
- `uses: [model, planner, learner]` — the groups it builds; naming another (`model=rssm algo=sac`) is
  an error, not silently ignored;
- `default_model`, `default_planner`, `default_learner` — implied when the user names none (and a
  model implies its `default_algo`: `model=rssm` -> dreamer);
- `suites: {<suite>: {key: value}}` — per-suite defaults (`model.x` keys go to the model);
- `group_defaults: {<group>: {<option>: {key: value}}}` — defaults for another group's option
  (MBPO's `ensemble: {propagation: ts1}`, RAVL's `sac: {num_q: 10}`);
- `datasets: {<dataset>: {key: value}}` — per-dataset defaults of offline algos (`hopper-medium-replay`
  for `env=d4rl/hopper-medium-replay-v2` or `-v5`: the papers' penalty and rollout horizon).
All of these sit below the user's overrides: a key set on the command line always wins.
Every key is defined in one file; `validate_overrides` checks names and keys before hydra starts so a
mistake gets one line.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Iterable, Optional

from mbrl.errors import UserError
from mbrl.paths import config_dir

CONFIG_DIR: Path = config_dir()
GROUPS = ("model", "algo", "planner", "learner", "sweep", "launcher")
#: groups that set top-level and hydra keys (`# @package _global_`), not keys of their own
GLOBAL_GROUPS = ("sweep", "launcher")
#: groups an algo may use, in the order they are implied
USES = ("model", "planner", "learner")
NONE = ("null", "none", "None")


def group_options(group: str) -> list[str]:
    d = CONFIG_DIR / group
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def _check_option(group: str, name: str) -> None:
    if name not in group_options(group):
        raise UserError(f"unknown {group} {name!r}; valid: {', '.join(group_options(group)) or '(none)'}")


def _hydra_compose(config_name: str, overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside a hydra app (the CLI): its search path is ours
        return compose(config_name=config_name, overrides=overrides)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


_GROUP_CACHE: dict[tuple[str, str], Any] = {}


def load_group(group: str, name: str) -> Any:
    """The config of one group option, with its hydra defaults list composed (a DictConfig)."""
    from omegaconf import OmegaConf

    _check_option(group, name)
    key = (group, name)
    if key not in _GROUP_CACHE:
        _GROUP_CACHE[key] = OmegaConf.to_container(_hydra_compose(f"{group}/{name}", [])[group], resolve=False)
    return OmegaConf.create(_GROUP_CACHE[key])


def base_keys() -> set[str]:
    from omegaconf import OmegaConf

    return set(OmegaConf.load(CONFIG_DIR / "config.yaml").keys()) - {"defaults", "hydra"}


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


def implied(chosen: dict[str, Optional[str]]) -> dict[str, Optional[str]]:
    """Fill in the implied groups of a set of choices: the algo a model implies (else the config's
    `default_algo`), then the model / planner / learner the algo implies."""
    from omegaconf import OmegaConf

    out = dict(chosen)
    if not out.get("algo"):
        default = str(OmegaConf.load(CONFIG_DIR / "config.yaml").default_algo)
        out["algo"] = (load_group("model", out["model"]).get("default_algo") if out.get("model") else None) or default
    algo = load_group("algo", out["algo"])
    for g in USES:
        if not out.get(g) and algo.get(f"default_{g}"):
            out[g] = str(algo.get(f"default_{g}"))
    return out


def check_uses(choices: dict[str, Optional[str]]) -> None:
    """A group named for an algo that does not use it is a mistake (`model=rssm algo=sac`)."""
    algo = choices["algo"]
    uses = set(load_group("algo", algo).get("uses") or [])
    for g in USES:
        if choices.get(g) and g not in uses:
            users = [a for a in group_options("algo") if g in (load_group("algo", a).get("uses") or [])]
            raise UserError(f"algo={algo} uses no {g}; drop {g}={choices[g]} (algos with a {g}: {', '.join(users)})")


def validate_overrides(argv: list[str]) -> list[str]:
    """Check names and keys before hydra starts, so mistakes get one line (UserError). Returns the
    group choices to add for hydra: `algo=dreamer` when `model=rssm algo.x=...` leaves the algo implied."""
    top = base_keys()
    chosen: dict[str, list[str]] = {}
    pairs = []
    takes_value = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
                   "--experimental-rerun", "--info", "-i"}
    for i, arg in enumerate(argv):
        if not arg.startswith("-") and "=" not in arg and not (i > 0 and argv[i - 1] in takes_value):
            raise UserError(f"unexpected argument {arg!r}: arguments are key=value overrides, e.g. env=gym/Pendulum-v1 algo=sac steps=10000")
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        if key.startswith(("+", "~")) or key.startswith("hydra"):
            continue
        pairs.append((key, value))
        if key in GROUPS:
            names = [v.strip() for v in value.split(",")] if _is_simple_list(value) else []
            for name in names:
                if name not in NONE:
                    _check_option(key, name)
                    if key == "launcher":
                        check_launcher(name)
            chosen[key] = [n for n in names if n not in NONE]
    # every combination of the named options, with what each implies
    combos: list[dict[str, Optional[str]]] = [{}]
    for g in ("model", "algo", *USES[1:]):
        combos = [dict(c, **{g: n}) for c in combos for n in (chosen.get(g) or [None])]
    combos = [implied(c) for c in combos]
    for c in combos:
        check_uses(c)
    extra = []
    for head in GROUPS:
        if chosen.get(head) or head in GLOBAL_GROUPS:
            continue
        names = sorted({c[head] for c in combos if c.get(head)})
        if any(k.startswith(head + ".") for k, _ in pairs) and names:
            chosen[head] = names  # keys are checked against every implied choice
            if len(names) == 1 and all(c.get(head) == names[0] for c in combos):  # the same for every job
                extra.append(f"{head}={names[0]}")
    for key, value in pairs:
        head = key.split(".", 1)[0]
        if key == "env" and _is_simple_list(value):
            for name in value.split(","):
                check_env_name(name.strip())
        if head in GLOBAL_GROUPS and "." in key:
            where = "hydra.launcher.<key>" if head == "launcher" else "the top-level keys it sets (e.g. steps=, env=, seed=)"
            raise UserError(f"{key!r}: {head} has no keys of its own; set {where} instead")
        if head in GROUPS and head not in GLOBAL_GROUPS and "." in key:
            names = chosen.get(head, [])
            if not names:
                raise UserError(f"{key!r} sets a {head} key, but no {head} is named or implied; add {head}=<name> (valid: {', '.join(group_options(head))})")
            for name in names:
                valid = _keys_of(load_group(head, name))
                sub = key.split(".", 1)[1]
                if sub not in valid:
                    top_keys = sorted(k for k in valid if "." not in k)
                    raise UserError(f"unknown key {key!r} for {head}={name}; valid: {', '.join(top_keys)}")
        elif head not in GROUPS and head not in top:
            raise UserError(f"unknown key {key!r}; valid: {', '.join(sorted(top | set(GROUPS)))} (prefix with + to add a new key)")
        elif head in top and "." in key and head != "env_kwargs":
            raise UserError(f"{head!r} is not a group of keys; use {head}=<value>")
    return extra


#: launcher option -> (the hydra plugin module it needs, its package, the mbrl extra that installs it)
LAUNCHER_PLUGINS = {"joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher", "joblib"),
                    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher", "slurm"),
                    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher", "slurm"),
                    "ray": ("hydra_plugins.hydra_ray_launcher", "hydra-ray-launcher", "ray")}


def check_launcher(name: str) -> None:
    """A launcher whose hydra plugin is not installed fails with one line naming the extra to install."""
    import importlib.util

    need = LAUNCHER_PLUGINS.get(name)
    if need and importlib.util.find_spec(need[0]) is None:
        raise UserError(f"launcher={name} needs the {need[1]} package: pip install 'mbrl[{need[2]}]'")


def check_env_name(name: str) -> None:
    """Fail early on an unknown suite or task (datasets are checked when loaded)."""
    from mbrl import envs

    suite = name.split("/", 1)[0] if "/" in name else None
    if suite in ("d4rl", "minari"):
        return
    envs.check(name)


def _user_keys(overrides: Iterable[str]) -> set[str]:
    return {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o}


#: top-level values: (kind, minimum); null is always allowed (the algo's default)
TOP_VALUES = {"seed": ("int", 0), "steps": ("int", 1), "num_envs": ("int", 1), "threads": ("int", 1),
              "eval_every": ("int", 0), "eval_episodes": ("int", 1), "log_every": ("int", 1),
              "checkpoint_every": ("int", 0), "checkpoint_minutes": ("float", 0), "save_buffer": ("bool", None),
              "progress": ("bool", None), "tensorboard": ("bool", None)}
#: the same loop keys where an algo config sets them, plus a few more every algo shares
ALGO_VALUES = {**{k: v for k, v in TOP_VALUES.items() if k != "seed"}, "prefill": ("int", 0), "batch_size": ("int", 1),
               "train_ratio": ("float", 0)}
DEVICES = ("cpu", "cuda", "cuda:<n>", "auto")


def _check_value(key: str, value: Any, kind: str, minimum: Any) -> Any:
    if value is None:
        return None
    if kind == "bool":
        if not isinstance(value, bool):
            raise UserError(f"{key}={value!r} is not a boolean; valid: true, false")
        return value
    valid = ("an integer" if kind == "int" else "a number") + (f" >= {minimum}" if minimum is not None else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{key}={value!r} is not a number; valid: {valid}")
    if kind == "int":
        if float(value) != int(value):
            raise UserError(f"{key}={value!r} is not an integer; valid: {valid}")
        value = int(value)
    if minimum is not None and value < minimum:
        raise UserError(f"{key}={value!r} is out of range; valid: {valid}")
    return value


def _default_at(group_cfg: Any, sub: str) -> Any:
    node = group_cfg
    for part in sub.split("."):
        if not hasattr(node, "get") or part not in node:
            return None
        node = node[part]
    return node


def check_values(cfg: Any, overrides: list[str]) -> None:
    """Values by type and range, before anything is built: one line for a bad one (exit 2). Top-level and
    loop keys against TOP_VALUES / ALGO_VALUES, `device` against what this machine has, and every group
    key the user set against the type of its default (an int key takes an int, a bool key a bool)."""
    from omegaconf import OmegaConf

    for k, (kind, lo) in TOP_VALUES.items():
        if k in cfg:
            cfg[k] = _check_value(k, cfg[k], kind, lo)
    algo = cfg.get("algo")
    if algo is not None:
        for k, (kind, lo) in ALGO_VALUES.items():
            if k in algo and not OmegaConf.is_missing(algo, k):
                algo[k] = _check_value(f"algo.{k}", algo[k], kind, lo)
    from mbrl.utils.trackers import check as check_tracker

    if "logger" in cfg:
        cfg.logger = check_tracker(cfg.get("logger"))  # a bad name or a missing package: one line
    device = str(cfg.get("device") or "cpu")
    if not re.fullmatch(r"cpu|auto|cuda(:\d+)?", device):
        raise UserError(f"device={device!r} is not a device; valid: {', '.join(DEVICES)}")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"device={device} but this machine has no CUDA device (torch {torch.__version__}); valid here: cpu, auto")
    for key in _user_keys(overrides):
        head, _, sub = key.partition(".")
        if head not in USES + ("algo",) or not sub or cfg.get(head) is None or not cfg[head].get("name"):
            continue
        try:
            default = _default_at(load_group(head, str(cfg[head].name)), sub)
        except UserError:
            continue
        value = OmegaConf.select(cfg, key)
        if isinstance(default, bool):
            _check_value(key, value, "bool", None)
        elif isinstance(default, (int, float)):  # a yaml `1` may mean a ratio: any number (ALGO_VALUES holds the integer keys)
            _check_value(key, value, "float", None)
    steps = cfg.get("steps") if cfg.get("steps") is not None else (algo.get("steps") if algo is not None else None)
    prefill = algo.get("prefill") if algo is not None else None
    if isinstance(steps, int) and isinstance(prefill, int) and steps < prefill:
        print(f"warning: steps={steps} is below the random prefill algo.prefill={prefill}: the run ends before any learning", file=sys.stderr)
    suite = str(cfg.get("env", "")).split("/", 1)[0]
    if suite in ("d4rl", "minari") and algo is not None and not _is_offline(str(algo.name)):
        offline = [a for a in group_options("algo") if _is_offline(a)]
        raise UserError(f"env={cfg.env} is a dataset: it needs an offline algo (valid: {', '.join(offline)}); algo={algo.name} interacts with an env")


def _is_offline(algo: str) -> bool:
    """An algo trained on a dataset (its config composes configs/algo/_shared/offline*.yaml)."""
    text = (CONFIG_DIR / "algo" / f"{algo}.yaml").read_text() if (CONFIG_DIR / "algo" / f"{algo}.yaml").is_file() else ""
    return "_shared/offline" in text


def finalize(cfg: Any, overrides: list[str]) -> Any:
    """Fill in what hydra's defaults cannot express (see the module docstring) on a composed config;
    `overrides` are the user's (they win over everything filled in here)."""
    from omegaconf import OmegaConf, open_dict

    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    user = _user_keys(overrides)
    with open_dict(cfg):
        choices = {g: (str(cfg[g].name) if cfg.get(g) is not None and cfg[g].get("name") else None) for g in ("model", "algo", *USES[1:])}
        full = implied(choices)
        check_uses(full)
        for g in ("algo", *USES):
            if choices.get(g) is None and full.get(g):
                # a group hydra did not load by name: load the implied choice, then put the user's keys of
                # it over it (force-added by the CLI as `++group.key=value`: a multirun over algos)
                partial = cfg.get(g)
                cfg[g] = load_group(g, full[g])
                if partial is not None:
                    cfg[g] = OmegaConf.merge(cfg[g], partial)
        suite = str(cfg.env).split("/", 1)[0]
        for k, v in ((cfg.algo.get("suites") or {}).get(suite) or {}).items():
            # `model.x` keys go to the model; everything else is an algo key (loop keys such
            # as steps/train_ratio live in the algo config; a top-level `steps=` still wins)
            path = k if k.startswith("model.") else f"algo.{k}"
            if path not in user and k not in user:
                OmegaConf.update(cfg, path, v, merge=True)
        for g, per_option in (cfg.algo.get("group_defaults") or {}).items():
            if cfg.get(g) is None:
                continue
            for k, v in (per_option.get(str(cfg[g].name)) or {}).items():
                if f"{g}.{k}" not in user:
                    OmegaConf.update(cfg, f"{g}.{k}", v, merge=True)
        apply_dataset_settings(cfg, user)
    return cfg


def dataset_key(env: str) -> Optional[str]:
    """The `datasets:` key of an offline env name: `d4rl/hopper-medium-replay-v2` -> `hopper-medium-replay`
    (the version suffix dropped, so D4RL's v2 files and the v5 ones collected here share settings)."""
    suite, _, name = str(env).partition("/")
    if suite not in ("d4rl", "minari") or not name:
        return None
    return re.sub(r"-v\d+$", "", name.split("/")[-1] if suite == "d4rl" else name.replace("/", "-")).lower()


def apply_dataset_settings(cfg: Any, user: set[str]) -> None:
    """Per-dataset defaults of an offline algo: `datasets: {<dataset>: {key: value}}` in its config (the
    papers' per-dataset penalty and horizon); `model.x` / `learner.x` keys go to those groups, the rest
    to the algo. Below the user's keys; above `suites` and `group_defaults`."""
    from omegaconf import OmegaConf

    key = dataset_key(cfg.env)
    per = (cfg.algo.get("datasets") or {}).get(key) if key else None
    for k, v in (per or {}).items():
        path = k if k.split(".", 1)[0] in ("model", "learner") else f"algo.{k}"
        if path not in user and k not in user and (path.split(".", 1)[0] == "algo" or cfg.get(path.split(".", 1)[0]) is not None):
            OmegaConf.update(cfg, path, v, merge=True)


def compose(overrides: Iterable[str] = ()) -> Any:
    """The full config of a run, as `python -m mbrl.train <overrides>` builds it (no run dir, no hydra app)."""
    overrides = list(overrides)
    extra = validate_overrides(overrides)
    cfg = _hydra_compose("config", overrides + extra)
    return finalize(cfg, overrides)
