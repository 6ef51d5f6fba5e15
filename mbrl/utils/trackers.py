"""Experiment trackers beside tensorboard and metrics.csv: `logger=wandb` and `logger=mlflow`.

    python -m mbrl.train env=toy/point logger=wandb            # offline files in <run dir>/wandb/ (WANDB_MODE=online to upload)
    python -m mbrl.train env=toy/point logger=mlflow           # file store <run dir>/mlruns (or $MLFLOW_TRACKING_URI)

`mbrl.utils.logging.Logger` opens the tracker its run dir's config.yaml names (`logger`, `group`) and sends
it every scalar it writes to tensorboard, at the same env step. Runs are grouped by `group` (a sweep's jobs:
the sweep preset's name): the wandb group, the mlflow experiment. A resumed run continues the same wandb
run / mlflow run (their ids are kept in the run dir). Optional extras: pip install 'mbrl[wandb]' / 'mbrl[mlflow]'.

`read_wandb_offline(run_dir)` and `read_mlflow(run_dir)` read the scalars back (the tests compare them with
the tensorboard events): wandb's offline `.wandb` files are a LevelDB-style log of `wandb_internal.Record`
protobufs, read here with wandb's own message classes.
"""
from __future__ import annotations

import json
import math
import os
import struct
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

from mbrl.errors import UserError

TRACKERS = ("wandb", "mlflow")
STEP_KEY = "env_step"  # the x-axis of every wandb metric (wandb's own _step counts log calls)


def _need(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"logger={extra} needs the {extra} package: pip install 'mbrl[{extra}]'") from None


def check(kind: Optional[str]) -> Optional[str]:
    """The tracker name (None for none); a bad name or a missing package is a UserError."""
    if kind is None or str(kind).lower() in ("none", "null", "", "false"):
        return None
    kind = str(kind).lower()
    if kind not in TRACKERS:
        raise UserError(f"logger={kind!r} is not a tracker; valid: {', '.join(TRACKERS)}, null (tensorboard and metrics.csv are always written)")
    _need("wandb" if kind == "wandb" else "mlflow", kind)
    return kind


class WandbTracker:
    def __init__(self, run_dir: Path, config: dict, group: str, name: str):
        wandb = _need("wandb", "wandb")
        id_file = run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.is_file() else None
        if run_id is None:
            import uuid

            run_id = uuid.uuid4().hex[:8]
            id_file.write_text(run_id + "\n")
        settings = wandb.Settings(console="off", x_disable_stats=True, x_disable_machine_info=True, silent=True,
                                  disable_git=True, save_code=False, x_save_requirements=False)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "mbrl"), group=group, name=name, id=run_id, resume="allow",
                              dir=str(run_dir), mode=os.environ.get("WANDB_MODE", "offline"), config=config, settings=settings,
                              reinit="create_new")
        self.run.define_metric(STEP_KEY)
        self.run.define_metric("*", step_metric=STEP_KEY)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log({**metrics, STEP_KEY: int(step)})

    def close(self) -> None:
        self.run.finish()


class MlflowTracker:
    def __init__(self, run_dir: Path, config: dict, group: str, name: str):
        _need("mlflow", "mlflow")
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        self._metric = Metric
        self.client = MlflowClient(tracking_uri=_mlflow_uri(run_dir))
        exp = self.client.get_experiment_by_name(group)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(group)
        id_file = run_dir / "mlflow_run_id.txt"
        if id_file.is_file():
            self.run_id = id_file.read_text().strip()
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            run = self.client.create_run(exp_id, run_name=name, tags={"mbrl.run_dir": str(run_dir), "mbrl.group": group})
            self.run_id = run.info.run_id
            id_file.write_text(self.run_id + "\n")
            params = [Param(k, str(v)[:500]) for k, v in sorted(_flatten(config).items())]
            for i in range(0, len(params), 100):
                self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log(self, step: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[self._metric(k, float(v), now, int(step)) for k, v in metrics.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _mlflow_uri(run_dir: Path) -> str:
    """$MLFLOW_TRACKING_URI (a server or a shared store), else the file store `<run_dir>/mlruns`. MLflow 3
    keeps file stores in maintenance mode behind MLFLOW_ALLOW_FILE_STORE; a store of one run's scalars is what
    it still serves well, so that opt-in is set here (unless the user set it)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (Path(run_dir) / "mlruns").resolve().as_uri()


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def open_tracker(run_dir: Optional[Path]):
    """The tracker named by `<run_dir>/config.yaml` (`logger`), else None."""
    if run_dir is None or not (Path(run_dir) / "config.yaml").is_file():
        return None
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(run_dir) / "config.yaml")
    kind = check(cfg.get("logger"))
    if kind is None:
        return None
    algo = str(cfg.algo.name) if cfg.get("algo") is not None else "run"
    group = str(cfg.get("group") or algo)
    name = Path(run_dir).name if Path(run_dir).name.startswith(("env=", "seed=")) else f"{algo}/{cfg.env}/{Path(run_dir).name}"
    config = OmegaConf.to_container(cfg, resolve=False)
    return (WandbTracker if kind == "wandb" else MlflowTracker)(Path(run_dir), config, group, name)


# ----- reading the scalars back --------------------------------------------------------------------
_BLOCK = 32768
_HEADER = 7  # LevelDB log record header: crc32 (4), length (2), type (1)


def _wandb_records(path: Path):
    """The payloads of a `.wandb` file: a 7-byte file header (":W&B", magic, version), then LevelDB log
    blocks of 32 KiB whose records are FULL (1) or FIRST / MIDDLE / LAST (2 / 3 / 4) fragments."""
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise UserError(f"{path} is not a wandb run file")
    pos, parts = 7, []
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        if kind == 0 and length == 0:  # zero padding
            pos += left
            continue
        payload = data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind == 1:
            yield payload
        elif kind == 2:
            parts = [payload]
        elif kind == 3:
            parts.append(payload)
        elif kind == 4:
            parts.append(payload)
            yield b"".join(parts)
            parts = []


def read_wandb_offline(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{key: [(env step, value)]} from every offline wandb run file under `run_dir`/wandb (a resumed run
    has one per attempt; a step logged twice keeps its last value)."""
    from wandb.proto import wandb_internal_pb2 as pb

    out: dict[str, dict[int, float]] = defaultdict(dict)
    files = sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
    if not files:
        raise UserError(f"no offline wandb run under {run_dir}/wandb")
    for f in files:
        for payload in _wandb_records(f):
            rec = pb.Record()
            rec.ParseFromString(payload)
            if rec.WhichOneof("record_type") != "history":
                continue
            items = {("/".join(i.nested_key) if i.nested_key else i.key): json.loads(i.value_json) for i in rec.history.item}
            step = items.get(STEP_KEY)
            if step is None:
                continue
            for k, v in items.items():
                if k != STEP_KEY and not k.startswith("_") and isinstance(v, (int, float)) and math.isfinite(v):
                    out[k][int(step)] = float(v)
    return {k: sorted(d.items()) for k, d in out.items()}


def read_mlflow(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{key: [(step, value)]} of the run's mlflow run (its id in `run_dir`/mlflow_run_id.txt)."""
    _need("mlflow", "mlflow")
    from mlflow.tracking import MlflowClient

    run_dir = Path(run_dir)
    run_id = (run_dir / "mlflow_run_id.txt").read_text().strip()
    client = MlflowClient(tracking_uri=_mlflow_uri(run_dir))
    run = client.get_run(run_id)
    out = {}
    for key in run.data.metrics:
        hist: dict[int, float] = {}
        for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp):
            hist[int(m.step)] = float(m.value)
        out[key] = sorted(hist.items())
    return out


def read_tensorboard(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{key: [(step, value)]} of the scalars in `run_dir`/tb (a step written twice keeps its last value)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(Path(run_dir) / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    out = {}
    for key in acc.Tags()["scalars"]:
        d = {}
        for e in acc.Scalars(key):
            d[int(e.step)] = float(e.value)
        out[key] = sorted(d.items())
    return out
