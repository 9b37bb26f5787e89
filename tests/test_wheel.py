"""The wheel `python -m build` makes, installed into a fresh virtual environment with the core alone.

The environment (torch, numpy, PyYAML, tqdm and nothing else) is cached in pytest's cache folder under a
key of the core requirements, the torch spec and the Python version, so only the first run pays for
installing torch; erlmr's own wheel is rebuilt and reinstalled every run. The torch spec is $TORCH_SPEC
(scripts/setup.sh exports it), torch==2.13.0 by default.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.wheel, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
CORE = {"torch", "numpy", "pyyaml", "tqdm"}
OPTIONAL = ["aeon", "sklearn", "scipy", "matplotlib", "PIL", "tensorboard"]
TORCH_SPEC = os.environ.get("TORCH_SPEC", "torch==2.13.0")


def run(command: list[str], cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def tail(result: subprocess.CompletedProcess, lines: int = 8) -> str:
    return "\n".join((result.stdout + result.stderr).strip().splitlines()[-lines:])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """erlmr's wheel, built from a copy of the sources so that the checkout gains no build/ or egg-info."""
    if importlib.util.find_spec("build") is None:
        pytest.skip("the wheel test needs the build package: pip install 'erlmr[test]'")
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the build backend (setuptools) of this environment, not one fetched for the build.
    result = run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", out, source])
    if result.returncode != 0:
        pytest.skip(f"python -m build could not build the wheel:\n{tail(result)}")
    (built,) = out.glob("erlmr-*.whl")
    return built


def requirements(wheel: Path) -> tuple[list[str], list[str]]:
    """The wheel's core requirements (no extra marker) and the extras it declares, from its METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(name).decode()
    requires = re.findall(r"^Requires-Dist: (.+)$", metadata, re.MULTILINE)
    extras = re.findall(r"^Provides-Extra: (.+)$", metadata, re.MULTILINE)
    return sorted(r for r in requires if "extra ==" not in r), extras


def requirement_name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()


@pytest.fixture(scope="module")
def core_env(wheel, request) -> Path:
    """A virtual environment with the core requirements alone and this wheel installed; its bin folder."""
    core, _ = requirements(wheel)
    key = hashlib.sha256(repr((core, TORCH_SPEC, sys.version)).encode()).hexdigest()[:16]
    env = Path(request.config.cache.mkdir("erlmr-core-venv")) / key
    if not (env / "ready").exists():
        create_core_env(env, core)
    result = run([env / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", wheel])
    assert result.returncode == 0, tail(result)
    return env / "bin"


def create_core_env(env: Path, core: list[str]) -> None:
    """Build the environment under a temporary name and rename it when complete: a half-made one is never used."""
    partial = env.with_name(f"{env.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    made = run([sys.executable, "-m", "venv", partial])
    if made.returncode != 0:
        pytest.skip(f"cannot create a virtual environment:\n{tail(made)}")
    installed = run([partial / "bin" / "python", "-m", "pip", "install", "--quiet", TORCH_SPEC, *core])
    if installed.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        pytest.skip(
            f"cannot install the core requirements ({TORCH_SPEC}, {', '.join(core)}) into a fresh environment:\n"
            f"{tail(installed)}"
        )
    (partial / "ready").write_text(" ".join([TORCH_SPEC, *core]))
    shutil.rmtree(env, ignore_errors=True)
    partial.rename(env)


def test_the_wheel_requires_the_core_alone_and_declares_the_extras(wheel):
    core, extras = requirements(wheel)
    assert {requirement_name(r) for r in core} == CORE
    assert {"datasets", "report", "probes", "tuning", "lightning", "tensorboard", "media", "all", "test"} <= set(extras)


def test_the_core_alone_imports_erlmr_and_lists_every_registry(core_env, tmp_path):
    check = (
        "import importlib.util, erlmr; from erlmr import EulerRepresentation, MMCLoss, min_norm_weights, ConcatFusion; "
        f"print(erlmr.__file__); print([m for m in {OPTIONAL!r} if importlib.util.find_spec(m)])"
    )
    result = run([core_env / "python", "-c", check], cwd=tmp_path)
    assert result.returncode == 0, tail(result)
    location, present = result.stdout.splitlines()
    assert Path(location).is_relative_to(core_env.parent)  # the installed wheel, not the checkout
    assert present == "[]"  # nothing optional is installed there
    listing = run([core_env / "erlmr", "list"], cwd=tmp_path)
    assert listing.returncode == 0, tail(listing)
    assert "basicmotions" in listing.stdout and "resnet18" in listing.stdout and "erlmr" in listing.stdout


def test_the_core_alone_trains_and_names_the_extra_a_feature_needs(core_env, tmp_path):
    trained = run(
        [
            core_env / "erlmr",
            "train",
            "--dataset",
            "synthetic",
            "--epochs",
            "1",
            "--quiet",
            "--device",
            "cpu",
            "--run-dir",
            tmp_path / "run",
            "--set",
            "data.options.train_size=40",
            "--set",
            "data.options.test_size=20",
        ],
        cwd=tmp_path,
    )
    assert trained.returncode == 0, tail(trained)
    report = run([core_env / "erlmr", "report", tmp_path / "run"], cwd=tmp_path)
    assert report.returncode == 2
    assert report.stderr.strip() == "erlmr: error: the report needs matplotlib: pip install 'erlmr[report]'"
    dataset = run([core_env / "erlmr", "train", "--dataset", "basicmotions", "--epochs", "1"], cwd=tmp_path)
    assert dataset.returncode == 2
    assert "the basicmotions dataset needs aeon: pip install 'erlmr[datasets]'" in dataset.stderr
