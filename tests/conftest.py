import os
import sys
from pathlib import Path

import pytest
import torch

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
