"""README claims that can be checked mechanically: the library example runs, the CLI names exist."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_library_example_runs():
    block = README.split("<!-- library-example -->", 1)[1]
    code = re.search(r"```python\n(.*?)```", block, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    m = scope["metrics"]
    assert scope["algo"].env_steps == 2000 and set(m) >= {"eval/return", "eval/return_std"}
    assert m["eval/return"] < 0  # Pendulum returns are negative; a real evaluation ran


def test_readme_load_and_act_example_runs(tmp_path, monkeypatch, one_thread):
    """The load-and-act block (mbrl.load, Agent.act) runs as shown: a full toy/point episode."""
    block = README.split("<!-- load-example -->", 1)[1]
    code = re.search(r"```python\n(.*?)```", block, re.S).group(1)
    monkeypatch.chdir(tmp_path)  # the block writes runs/readme-sac
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["agent"].env_steps == 300 and scope["done"]
    assert -150 < scope["total"] < 0  # toy/point rewards are negative distances, 50 steps


def test_readme_names_real_algos_and_models():
    from mbrl.config import group_options

    for name in re.findall(r"algo=([a-z0-9]+)", README):
        assert name in group_options("algo"), name
    for name in re.findall(r"model=([a-z0-9]+)", README):
        assert name in group_options("model"), name
    for group in ("planner", "learner"):
        names = re.findall(rf"\b{group}=([a-z0-9_]+)", README)
        assert names, group
        for name in names:
            assert name in group_options(group), (group, name)
    for bench in re.search(r"mbrl\.bench \{([a-z,]+)\}", README).group(1).split(","):
        assert (ROOT / "mbrl" / "bench" / f"{bench}.py").is_file(), bench
    for link in re.findall(r"\]\((results/[^)]+)\)", README):
        assert (ROOT / link).is_file(), link
