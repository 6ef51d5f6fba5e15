"""A non-editable install ships the hydra configs: the wheel holds every `configs/**/*.yaml` of the
checkout as `mbrl/configs/...`, and `mbrl.paths.config_dir()` finds them from an unpacked wheel
with the checkout out of reach (no network: `pip wheel --no-build-isolation --no-index`)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# what a build reads; copied so the build's `build/` and `*.egg-info` stay out of the checkout
SOURCE_FILES = ("setup.cfg", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "constraints.txt",
                "LICENSE")
SOURCE_DIRS = ("mbrl", "envs", "configs")


def _need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed in this interpreter; it is needed to build the wheel")


def _repo_files(folder: str, pattern: str) -> list[str]:
    """Paths (relative to the repo, POSIX) of the checkout's files under `folder` matching `pattern`."""
    return sorted(p.relative_to(REPO).as_posix() for p in (REPO / folder).rglob(pattern)
                  if p.is_file() and "__pycache__" not in p.parts)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    _need("pip")
    _need("setuptools")
    src = tmp_path_factory.mktemp("src")
    for name in SOURCE_FILES:
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, src / name)
    for name in SOURCE_DIRS:
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return src


def _build(cmd: list[str], cwd: Path) -> None:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _build([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
            "--no-cache-dir", "-w", str(out), str(source)], cwd=out)
    wheels = list(out.glob("mbrl-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_ships_every_config_as_mbrl_configs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = _repo_files("configs", "*.yaml")
    assert "configs/config.yaml" in configs
    missing = [c for c in configs if f"mbrl/{c}" not in names]
    assert not missing, f"configs missing from the wheel (as mbrl/configs/...): {missing}"
    assert "mbrl/paths.py" in names
    # no generic top-level `configs` package in site-packages
    assert not any(n.startswith("configs/") for n in names)
    # nor a top-level `envs` (the PyPI package `envs` installs into site-packages/envs/): the suites
    # ship as `mbrl/envs/`
    assert "mbrl/envs/__init__.py" in names and not any(n.startswith("envs/") for n in names)
    # every module of the checkout is shipped (setup.cfg lists the packages by hand)
    modules = _repo_files("mbrl", "*.py") + [f"mbrl/{m}" for m in _repo_files("envs", "*.py")]
    missing = [m for m in modules if m not in names]
    assert not missing, f"modules missing from the wheel (add their package to setup.cfg `packages`): {missing}"
    # the published baseline scores mbrl.report reads (setup.cfg package_data)
    data = _repo_files("mbrl/baselines", "*.csv")
    assert data and not [d for d in data if d not in names], f"baseline data missing from the wheel: {data}"


def test_unpacked_wheel_finds_its_configs(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # the unrelated PyPI package `envs` (1.4) installs a top-level `envs/`: ours must not care
    (site / "envs").mkdir()
    (site / "envs" / "__init__.py").write_text("NOT_MBRL = True\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), *sorted(deps)])
    code = ("import mbrl, sys; from mbrl.paths import config_dir; "
            "from hydra import compose, initialize_config_dir; "
            "assert not any(m.startswith('torch') for m in sys.modules), 'mbrl.paths imports torch'; "
            "print(config_dir()); print(mbrl.__file__); "
            "initialize_config_dir(config_dir=str(config_dir()), version_base='1.3'); "
            "print(compose('config').env); "
            "import mbrl.envs as E, envs; assert envs.NOT_MBRL; E.check('toy/point'); print(E.__file__)")
    # -S: no site processing, so the venv's editable-install hook (a .pth) cannot bring the checkout in
    res = subprocess.run([sys.executable, "-S", "-c", code], cwd=elsewhere, env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-3000:]
    config_dir, mbrl_file, env_name, envs_file = res.stdout.strip().splitlines()[-4:]
    assert Path(envs_file).resolve().is_relative_to((site / "mbrl" / "envs").resolve()), envs_file
    assert Path(mbrl_file).resolve().is_relative_to(site.resolve()), mbrl_file
    assert Path(config_dir).resolve() == (site / "mbrl" / "configs").resolve(), config_dir
    assert (Path(config_dir) / "config.yaml").is_file()
    assert env_name


def test_sdist_carries_the_configs(source, tmp_path):
    _build([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(tmp_path)!r})"],
           cwd=source)
    (sdist,) = tmp_path.glob("mbrl-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    missing = [c for c in _repo_files("configs", "*.yaml") if c not in names]
    assert not missing, f"configs missing from the sdist: {missing}"
    assert "mbrl/paths.py" in names


def test_checkout_config_dir_is_the_repo_configs():
    from mbrl.paths import config_dir
    if (Path(importlib.util.find_spec("mbrl").origin).parent / "configs").is_dir():
        pytest.skip("mbrl is imported from a wheel install here, not from the checkout")
    assert config_dir() == REPO / "configs"
    assert (config_dir() / "config.yaml").is_file()
