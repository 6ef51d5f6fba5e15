import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import pytest  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs 2 workers: share the cores, don't oversubscribe them
    import torch  # noqa: E402

    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _workers))

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m <args>` in a subprocess (the way a user does) and capture its output."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("MBRL_DEBUG", None)
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout, env=e)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks run much faster on one torch thread than on two on a shared 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def cli():
    return run_cli


class GoalReached(Exception):
    """Raised by `run_until` when an evaluation reaches the test's goal."""


def run_until(algo, goal: float, key: str = "eval/return") -> list[tuple[int, dict]]:
    """Run `algo` until one of its evaluations reaches `goal` in `key` (the test's own threshold), or to
    the end of its budget; returns every evaluation as (env steps, metrics). A learning test with a
    budget sized for its slow seeds then stops as soon as it has shown what it tests."""
    evals: list[tuple[int, dict]] = []
    evaluate = algo.evaluate

    def evaluate_and_check(*a, **k):
        m = evaluate(*a, **k)
        evals.append((int(algo.env_steps), m))
        if m.get(key, float("-inf")) >= goal:
            raise GoalReached
        return m

    algo.evaluate = evaluate_and_check
    try:
        algo.run()
    except GoalReached:
        pass
    finally:
        algo.evaluate = evaluate
    return evals


#: the learning tests that take the longest (tens of seconds to minutes on 2 cores), longest first: run
#: before the rest so that `pytest -n 2` does not end with one worker alone on a long test
SLOW_FIRST = ("test_mbpo_learns_inverted_pendulum", "test_pets_terminal_value_solves_inverted_pendulum", "test_pets_learns_cartpole",
              "test_rssm_latent_mpc_beats_random", "test_diamond_learns_point", "test_transformer_dreamer_learns_continuous_point",
              "test_dreamer_learns_continuous_point", "test_mamba_dreamer_learns_continuous_point", "test_submitit_preempted_job_requeues_and_resumes",
              "test_joblib_sweep_rerun_status_and_report", "test_s5_dreamer_learns_continuous_point", "test_sac_learns_pendulum", "test_tdmpc2_learns_pendulum",
              "test_ssm_world_models_recall_the_cue")


def pytest_collection_modifyitems(config, items):
    """The slow tests first, alternating between the two halves of the collection: `-n 2 --dist
    worksteal` hands each worker one contiguous half and steals from the ends, so each worker starts on
    its share of the long tests and the short ones fill in around them."""
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    slow = sorted((it for it in items if getattr(it, "originalname", it.name) in rank), key=lambda it: rank[getattr(it, "originalname", it.name)])
    rest = [it for it in items if getattr(it, "originalname", it.name) not in rank]
    half = len(items) // 2
    k = max(0, half - len(slow[0::2]))
    items[:] = slow[0::2] + rest[:k] + slow[1::2] + rest[k:]
