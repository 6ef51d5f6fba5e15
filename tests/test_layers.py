"""The floors of DESIGN.md / docs/architecture.md, checked on the imports of every module: algorithms
and learners never import a backbone module (they use the registry), planners never import a model,
models never import an algorithm, nothing imports upward."""
import ast
from pathlib import Path

import mbrl.models

ROOT = Path(__file__).resolve().parents[1]


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package.replace(".", "/")).rglob("*.py"))


def test_algos_and_learners_never_import_a_backbone():
    backbones = {f"mbrl.models.{n}" for n in mbrl.models.names()}
    assert {"mbrl.models.ensemble", "mbrl.models.rssm"} <= backbones
    for pkg in ("mbrl.algos", "mbrl.learners", "mbrl.planners"):
        for path in modules(pkg):
            bad = sorted(i for i in imports(path) if any(i == b or i.startswith(b + ".") for b in backbones))
            assert not bad, f"{path.relative_to(ROOT)} imports backbone module(s) {bad}; use mbrl.models.build"


def test_nothing_imports_upward():
    floors = {  # a package may import only packages on its own floor or below
        "mbrl.data": ("mbrl.algos", "mbrl.learners", "mbrl.models", "mbrl.planners", "mbrl.train", "mbrl.config"),
        "mbrl.utils": ("mbrl.algos", "mbrl.learners", "mbrl.models", "mbrl.planners", "mbrl.train", "mbrl.config"),
        "mbrl.models": ("mbrl.algos", "mbrl.learners", "mbrl.planners", "mbrl.train", "mbrl.config"),
        "mbrl.planners": ("mbrl.models", "mbrl.algos", "mbrl.learners", "mbrl.train", "mbrl.config"),
        "mbrl.learners": ("mbrl.algos", "mbrl.train", "mbrl.config"),
        "mbrl.algos": ("mbrl.train", "mbrl.config"),
        "envs": ("mbrl.algos", "mbrl.learners", "mbrl.models", "mbrl.planners", "mbrl.train", "mbrl.config", "mbrl.data"),
    }
    for pkg, above in floors.items():
        for path in modules(pkg):
            bad = sorted(i for i in imports(path) if any(i == a or i.startswith(a + ".") for a in above))
            assert not bad, f"{path.relative_to(ROOT)} ({pkg}) imports from above its floor: {bad}"


def test_env_suites_import_as_mbrl_envs():
    """The wheel ships `envs/` as `mbrl.envs` (a top-level `envs` collides with the PyPI package
    `envs`): library code and tests import `mbrl.envs`, and `envs/` imports itself relatively."""
    for pkg in ("mbrl", "tests", "envs"):
        for path in modules(pkg):
            bad = sorted(i for i in imports(path) if i == "envs" or i.startswith("envs."))
            assert not bad, f"{path.relative_to(ROOT)} imports the top-level {bad}; use `from mbrl import envs` / `mbrl.envs.<module>`"
