import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from erlmr.data.avdigits import build_avdigits

# The shared test builders (tests/support.py) import as `support` from every test folder.
sys.path.insert(0, str(Path(__file__).parent))

# Tests share two cores with each other's subprocesses; more threads only add contention.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def run_config(tmp_path):
    """A small, quiet training config writing under tmp_path; pass overrides as nested dicts."""

    def make(**sections):
        config = {"train": {"epochs": 2, "quiet": True, "out": str(tmp_path / "runs"), "batch_size": 32}}
        for section, values in sections.items():
            config.setdefault(section, {}).update(values)
        return config

    return make


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """A small AV-digits build (300 clips, seed 0), made once per session; skips without espeak-ng."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    return build_avdigits(tmp_path_factory.mktemp("avdigits") / "set", clips=300, seed=0, progress=False)
