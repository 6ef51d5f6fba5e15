"""Offline datasets: D4RL HDF5 files and local Minari datasets, loaded into the common ReplayBuffer.

Names (the `env=` of `python -m mbrl.train`):
- `d4rl/<name>` e.g. `d4rl/hopper-medium-v2`: a D4RL-format HDF5 file, found at `dataset_path=` (config)
  or `$D4RL_DATASET_DIR/<name>.hdf5`. Evaluation runs in the matching gymnasium MuJoCo env
  (`hopper` -> `gym/Hopper-v5`; v5 differs slightly from D4RL's mujoco-py v2 envs), or in the env
  recorded in the file's `env_name` attribute (files written by `python -m mbrl.collect`).
- `minari/<dataset_id>` e.g. `minari/mujoco/hopper/medium-v0`: a Minari dataset under
  `$MINARI_DATASETS_PATH` (default `~/.minari/datasets`), read straight from
  `<root>/<dataset_id>/data/main_data.hdf5` (one group `episode_<i>` per episode).

D4RL format: flat arrays `observations [N, D]`, `actions [N, A]`, `rewards [N]`, `terminals [N]`,
`timeouts [N]` (+ optional `next_observations [N, D]`). Episodes end where `terminals | timeouts`.
Without `next_observations`, next obs is `observations[t+1]` inside an episode; a transition with no
recorded successor (the last step of a timed-out episode, or the file's last step) is dropped and the
step before it is marked truncated, so episode boundaries stay right. A terminated step keeps its own
observation as a placeholder next obs (never bootstrapped: its target is masked by `terminated`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mbrl.envs.offline_scores import D4RL_EVAL_ENVS, D4RL_REF_SCORES, minari_ref_scores, normalized_score
from mbrl.errors import UserError




D4RL_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")


@dataclass
class OfflineDataset:
    """Transitions of a dataset in time order (flat numpy arrays, leading dim N)."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    name: str = ""
    eval_env: Optional[str] = None  # an envs.make name, e.g. "gym/Hopper-v5"
    ref_scores: Optional[tuple[float, float]] = None
    action_low: Optional[np.ndarray] = None  # bounds of the dataset's raw actions (None: already in [-1, 1])
    action_high: Optional[np.ndarray] = None
    metadata: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.reward.shape[0])

    @property
    def episode_ends(self) -> np.ndarray:
        return np.logical_or(self.terminated, self.truncated)

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of every complete episode in the data."""
        ends = np.flatnonzero(self.episode_ends)
        if len(ends) == 0:
            return np.zeros(0)
        cs = np.concatenate([[0.0], np.cumsum(self.reward, dtype=np.float64)])
        starts = np.concatenate([[0], ends[:-1] + 1])
        return cs[ends + 1] - cs[starts]

    def normalized_score(self, ret):
        if self.ref_scores is None:
            raise UserError(f"dataset {self.name!r} has no reference scores (D4RL robots: "
                               f"{', '.join(D4RL_REF_SCORES)}; Minari/collected files: ref_min_score/ref_max_score metadata)")
        return normalized_score(ret, *self.ref_scores)

    def scaled_actions(self) -> np.ndarray:
        """Actions rescaled to [-1, 1] (the envs package convention for continuous actions)."""
        a = self.action.astype(np.float32)
        if self.action_low is None or np.issubdtype(self.action.dtype, np.integer):
            return a if not np.issubdtype(self.action.dtype, np.integer) else self.action
        lo, hi = self.action_low.astype(np.float32), self.action_high.astype(np.float32)
        return np.clip(2.0 * (a - lo) / (hi - lo) - 1.0, -1.0, 1.0)

    def spaces(self):
        """(observation_space, action_space) as seen by the agent (actions in [-1, 1])."""
        import gymnasium as gym

        obs_space = gym.spaces.Box(-np.inf, np.inf, self.obs.shape[1:], np.float32)
        if np.issubdtype(self.action.dtype, np.integer):
            act_space = gym.spaces.Discrete(int(self.metadata.get("num_actions", int(self.action.max()) + 1)))
        else:
            act_space = gym.spaces.Box(-1.0, 1.0, self.action.shape[1:], np.float32)
        return obs_space, act_space

    def to_buffer(self, capacity: Optional[int] = None, seed: int = 0, device: str = "cpu", obs_space=None, action_space=None):
        """A ReplayBuffer holding every transition (via `add_batch`, in time order)."""
        from mbrl.data import ReplayBuffer

        os_, as_ = self.spaces()
        buf = ReplayBuffer(capacity or self.entries_needed(), obs_space or os_, action_space or as_, num_envs=1, seed=seed, device=device)
        self.fill(buf)
        return buf

    def entries_needed(self) -> int:
        """Buffer entries that hold every transition: one per transition plus one per episode start
        (a transition whose obs does not continue the previous transition's next_obs)."""
        n = len(self)
        if n == 0:
            return 2
        cont = ~self.episode_ends[:-1] & np.all((self.obs[1:] == self.next_obs[:-1]).reshape(n - 1, -1), axis=1)
        return max(2, n + 1 + int(np.count_nonzero(~cont)))

    def fill(self, buffer) -> None:
        buffer.add_batch(self.obs.astype(np.float32), self.scaled_actions(), self.reward.astype(np.float32),
                         self.next_obs.astype(np.float32), self.terminated.astype(bool), self.truncated.astype(bool))


# ----------------------------------------------------------------------------------------- D4RL

def _open_h5(path: Path):
    import h5py

    if not path.exists():
        raise UserError(f"dataset file not found: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"{path}: not a readable HDF5 file ({e.__class__.__name__}: {str(e).splitlines()[0]})") from None


def _attr(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def load_d4rl(path: str | Path, name: Optional[str] = None) -> OfflineDataset:
    """Read a D4RL-format HDF5 file (see module docstring for the exact rules)."""
    import h5py

    path = Path(path)
    name = name or path.stem
    with _open_h5(path) as f:
        missing = [k for k in D4RL_KEYS if k not in f]
        if missing:
            raise UserError(f"{path}: not a D4RL dataset, missing keys {missing}; required: {list(D4RL_KEYS)}"
                               f" (+ optional next_observations); found: {sorted(f.keys())}")
        data = {}
        for k in D4RL_KEYS + (("next_observations",) if "next_observations" in f else ()):
            if not isinstance(f[k], h5py.Dataset):
                raise UserError(f"{path}: '{k}' must be an array, found a group")
            data[k] = f[k][()]
        attrs = {k: _attr(v) for k, v in f.attrs.items()}
        if "metadata" in f and isinstance(f["metadata"], h5py.Group):
            f["metadata"].visititems(lambda k, v: attrs.setdefault(f"metadata/{k}", _attr(v[()])) if isinstance(v, h5py.Dataset) else None)
    n = data["rewards"].shape[0]
    for k, v in data.items():
        if v.ndim == 0 or v.shape[0] != n:
            raise UserError(f"{path}: length mismatch, '{k}' has {v.shape[0] if v.ndim else 0} rows but 'rewards' has {n}")
    obs = data["observations"]
    if obs.ndim != 2:
        raise UserError(f"{path}: 'observations' must be [N, obs_dim], got shape {obs.shape}")
    if "next_observations" in data and data["next_observations"].shape != obs.shape:
        raise UserError(f"{path}: 'next_observations' shape {data['next_observations'].shape} != 'observations' shape {obs.shape}")
    rew = data["rewards"].reshape(n).astype(np.float32)
    term = data["terminals"].reshape(n).astype(bool)
    tout = data["timeouts"].reshape(n).astype(bool) & ~term
    act = data["actions"]
    act = act.reshape(n, -1) if not np.issubdtype(act.dtype, np.integer) else act.reshape(n)

    if "next_observations" in data:
        keep = np.ones(n, bool)
        next_obs = data["next_observations"]
        trunc = tout.copy()
        if n and not (term[-1] or tout[-1]):
            trunc[-1] = True  # the file ends mid-episode: the stream still ends there
    else:
        next_obs = np.empty_like(obs)
        next_obs[:-1] = obs[1:]
        ends = term | tout
        # no successor recorded: the last step of a timed-out episode, or the file's last step
        keep = ~(tout.copy())
        if n and not term[-1]:
            keep[-1] = False
        next_obs[term] = obs[term]  # placeholder; masked by `terminated` in every target
        trunc = np.zeros(n, bool)
        # the step before a dropped one closes its episode (truncated), unless it already ended
        dropped = np.flatnonzero(~keep)
        prev = dropped - 1
        prev = prev[(prev >= 0)]
        prev = prev[keep[prev] & ~ends[prev]]
        trunc[prev] = True
    robot = name.split("-", 1)[0].lower()
    eval_env = attrs.get("env_name") or (f"gym/{D4RL_EVAL_ENVS[robot]}" if robot in D4RL_EVAL_ENVS else None)
    if robot in D4RL_REF_SCORES:
        ref = D4RL_REF_SCORES[robot]
    elif "ref_min_score" in attrs and "ref_max_score" in attrs:
        ref = (float(attrs["ref_min_score"]), float(attrs["ref_max_score"]))
    else:
        ref = None
    meta = dict(attrs, source="d4rl", path=str(path), dropped_transitions=int((~keep).sum()))
    return OfflineDataset(obs=obs[keep], action=act[keep], reward=rew[keep], next_obs=next_obs[keep],
                          terminated=term[keep], truncated=trunc[keep], name=name, eval_env=eval_env,
                          ref_scores=ref, metadata=meta)


def write_d4rl(path: str | Path, obs, action, reward, next_obs, terminated, truncated, attrs: Optional[dict] = None) -> Path:
    """Write transitions as a D4RL-format HDF5 file (with `next_observations`), atomically (a temp file
    beside it, renamed in; removed if writing fails). Integer (pixel) observations keep their dtype."""
    import h5py

    from mbrl.utils.checkpoint import atomic_write

    def obs_array(x):
        x = np.asarray(x)
        return x if np.issubdtype(x.dtype, np.integer) else x.astype(np.float32)

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("observations", data=obs_array(obs), compression="gzip")
            f.create_dataset("next_observations", data=obs_array(next_obs), compression="gzip")
            f.create_dataset("actions", data=np.asarray(action, np.float32), compression="gzip")
            f.create_dataset("rewards", data=np.asarray(reward, np.float32))
            f.create_dataset("terminals", data=np.asarray(terminated, bool))
            f.create_dataset("timeouts", data=np.asarray(truncated, bool))
            for k, v in (attrs or {}).items():
                f.attrs[k] = v if not isinstance(v, (dict, list)) else json.dumps(v)

    path = atomic_write(path, write)
    os.chmod(path, 0o644)  # the temp file was private (mkstemp); a dataset is readable like any file
    return path


# --------------------------------------------------------------------------------------- Minari

def minari_root() -> Path:
    return Path(os.environ.get("MINARI_DATASETS_PATH") or Path.home() / ".minari" / "datasets").expanduser()


def _box_bounds(space_json: Optional[str]):
    """(low, high) of a serialised Minari Box action space, or (None, None)."""
    if not space_json:
        return None, None
    try:
        d = json.loads(space_json) if isinstance(space_json, str) else space_json
    except json.JSONDecodeError:
        return None, None
    if not isinstance(d, dict) or d.get("type") != "Box":
        return None, None
    lo, hi = np.asarray(d["low"], np.float64), np.asarray(d["high"], np.float64)
    if np.all(lo == -1) and np.all(hi == 1) or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        return None, None
    return lo, hi


def load_minari(dataset_id: str, root: str | Path | None = None) -> OfflineDataset:
    """Read a local Minari dataset `<root>/<dataset_id>/data/main_data.hdf5` (HDF5 storage)."""
    import h5py

    root = Path(root) if root is not None else minari_root()
    ddir = root / dataset_id
    path = ddir / "data" / "main_data.hdf5"
    if not path.exists():
        raise UserError(f"Minari dataset {dataset_id!r} not found: expected {path} "
                           f"(set MINARI_DATASETS_PATH, default ~/.minari/datasets; arrow-format datasets are not supported)")
    meta: dict[str, Any] = {}
    meta_path = ddir / "data" / "metadata.json"
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{meta_path}: not valid JSON ({e})") from None
    parts: dict[str, list] = {k: [] for k in ("obs", "next_obs", "action", "reward", "terminated", "truncated")}
    with _open_h5(path) as f:
        eps = sorted((k for k in f.keys() if k.startswith("episode_")), key=lambda k: int(k.split("_", 1)[1]) if k.split("_", 1)[1].isdigit() else -1)
        if not eps:
            raise UserError(f"{path}: no 'episode_<i>' groups; not a Minari HDF5 dataset (found keys {sorted(f.keys())[:10]})")
        for ep in eps:
            g = f[ep]
            need = ("observations", "actions", "rewards", "terminations", "truncations")
            missing = [k for k in need if k not in g]
            if missing:
                raise UserError(f"{path}: group {ep} misses {missing}; each episode needs {list(need)}")
            if not isinstance(g["observations"], h5py.Dataset) or not isinstance(g["actions"], h5py.Dataset):
                raise UserError(f"{path}: {ep}: observations/actions are groups (Dict/Tuple spaces); only Box/Discrete spaces are supported")
            o = g["observations"][()]
            a, r = g["actions"][()], g["rewards"][()]
            te, tr = g["terminations"][()].astype(bool), g["truncations"][()].astype(bool)
            T = r.shape[0]
            if o.shape[0] != T + 1 or a.shape[0] != T or te.shape[0] != T or tr.shape[0] != T:
                raise UserError(f"{path}: {ep}: length mismatch: observations {o.shape[0]} (want T+1), actions {a.shape[0]}, "
                                   f"rewards {T}, terminations {te.shape[0]}, truncations {tr.shape[0]} (want T)")
            if T == 0:
                continue
            o = o.reshape(T + 1, -1)
            tr = tr & ~te
            if not (te[-1] or tr[-1]):
                tr = tr.copy()
                tr[-1] = True  # recording stopped mid-episode: the episode still ends here
            parts["obs"].append(o[:-1]); parts["next_obs"].append(o[1:])
            parts["action"].append(a.reshape(T, -1) if not np.issubdtype(a.dtype, np.integer) else a.reshape(T))
            parts["reward"].append(r.reshape(T).astype(np.float32))
            parts["terminated"].append(te); parts["truncated"].append(tr)
    if not parts["obs"]:
        raise UserError(f"{path}: every episode is empty")
    data = {k: np.concatenate(v) for k, v in parts.items()}
    lo, hi = _box_bounds(meta.get("action_space"))
    eval_env = None
    spec = meta.get("eval_env_spec") or meta.get("env_spec")
    if spec:
        try:
            sid = json.loads(spec)["id"] if isinstance(spec, str) else spec["id"]
            eval_env = f"gym/{sid}"
        except (json.JSONDecodeError, KeyError, TypeError):
            eval_env = None
    return OfflineDataset(**data, name=dataset_id, eval_env=eval_env, ref_scores=minari_ref_scores(ddir),
                          action_low=lo, action_high=hi, metadata=dict(meta, source="minari", path=str(path)))


# ------------------------------------------------------------------------------------ by name

OFFLINE_SUITES = ("d4rl", "minari")


def is_offline(env_name: str) -> bool:
    return str(env_name).split("/", 1)[0] in OFFLINE_SUITES


def load(env_name: str, dataset_path: Optional[str] = None) -> OfflineDataset:
    """`d4rl/<name>` or `minari/<dataset_id>` -> OfflineDataset (see module docstring)."""
    suite, _, rest = str(env_name).partition("/")
    if suite not in OFFLINE_SUITES or not rest:
        raise UserError(f"not an offline dataset name: {env_name!r}; valid: d4rl/<name> (e.g. d4rl/hopper-medium-v2) or minari/<dataset_id>")
    if suite == "d4rl":
        if dataset_path:
            path = Path(dataset_path).expanduser()
        else:
            d = os.environ.get("D4RL_DATASET_DIR")
            if not d:
                raise UserError(f"no file for {env_name}: pass dataset_path=<file.hdf5> or set D4RL_DATASET_DIR (file <dir>/{rest}.hdf5)")
            path = Path(d).expanduser() / f"{rest}.hdf5"
        if not path.exists():
            raise UserError(f"D4RL dataset {rest!r} not found: expected {path} (pass dataset_path= or set D4RL_DATASET_DIR)")
        return check_finite(load_d4rl(path, name=rest), str(path))
    root = Path(dataset_path).expanduser() if dataset_path else None
    return check_finite(load_minari(rest, root=root), rest)


def check_finite(data: OfflineDataset, source: str) -> OfflineDataset:
    """A dataset with a NaN or inf value fails here, naming the first bad row (it would train to NaN)."""
    for key in ("obs", "action", "reward", "next_obs"):
        arr = getattr(data, key)
        if not np.issubdtype(arr.dtype, np.floating):
            continue
        bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise UserError(f"dataset {source}: '{key}' has a NaN or inf value at row {row} ({int(bad.sum())} bad rows in all); clean the file")
    return data
