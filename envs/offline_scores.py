"""Reference returns for normalised offline-RL scores.

normalised score = 100 * (return - ref_min) / (ref_max - ref_min)

D4RL: the gym-MuJoCo locomotion reference returns of D4RL's `d4rl/infos.py` (the same min/max for
v0, v1 and v2 datasets of a robot: a random policy's and an expert SAC policy's average return).
Minari: each dataset carries its own `ref_min_score` / `ref_max_score` in its metadata
(`<root>/<dataset_id>/data/metadata.json`); `minari_ref_scores` reads them.
"""
from __future__ import annotations

import json
from pathlib import Path
from mbrl.errors import UserError

# robot -> (ref_min_score, ref_max_score), from D4RL's infos.py (REF_MIN_SCORE / REF_MAX_SCORE)
D4RL_REF_SCORES: dict[str, tuple[float, float]] = {
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}

D4RL_KINDS = ("random", "medium", "expert", "medium-replay", "full-replay", "medium-expert")

# D4RL robot -> the gymnasium MuJoCo env used for evaluation. NOTE: gymnasium's v5 envs differ
# slightly from the mujoco-py v2 envs D4RL was recorded in (newer MuJoCo, small model and
# observation fixes), so scores are comparable but not bit-identical to published D4RL numbers.
D4RL_EVAL_ENVS: dict[str, str] = {
    "halfcheetah": "HalfCheetah-v5",
    "hopper": "Hopper-v5",
    "walker2d": "Walker2d-v5",
    "ant": "Ant-v5",
}




def d4rl_robot(name: str) -> str:
    """'hopper-medium-v2' -> 'hopper'. Raises UserError for non-locomotion names."""
    robot = name.split("-", 1)[0].lower()
    if robot not in D4RL_REF_SCORES:
        raise UserError(
            f"no D4RL reference scores for dataset {name!r}; known robots: {', '.join(D4RL_REF_SCORES)} "
            f"(names like hopper-medium-v2)")
    return robot


def d4rl_ref_scores(name: str) -> tuple[float, float]:
    return D4RL_REF_SCORES[d4rl_robot(name)]


def normalized_score(ret, ref_min: float, ref_max: float):
    """100 * (ret - ref_min) / (ref_max - ref_min); works on floats and numpy arrays."""
    if ref_max == ref_min:
        raise UserError(f"reference scores must differ (got min = max = {ref_min})")
    return 100.0 * (ret - ref_min) / (ref_max - ref_min)


def d4rl_normalized_score(name: str, ret):
    lo, hi = d4rl_ref_scores(name)
    return normalized_score(ret, lo, hi)


def minari_ref_scores(dataset_dir: str | Path) -> tuple[float, float] | None:
    """(ref_min_score, ref_max_score) from a local Minari dataset's metadata.json, or None if absent.

    `dataset_dir` is `<root>/<dataset_id>` (the folder that holds `data/`)."""
    meta_path = Path(dataset_dir) / "data" / "metadata.json"
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{meta_path}: not valid JSON ({e})") from None
    lo, hi = meta.get("ref_min_score"), meta.get("ref_max_score")
    if lo is None or hi is None:
        return None
    return float(lo), float(hi)
