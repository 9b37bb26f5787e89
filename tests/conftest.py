import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from erlmr.analysis import features
from erlmr.data.avdigits import build_avdigits

# The shared test builders (tests/support.py) import as `support` from every test folder.
sys.path.insert(0, str(Path(__file__).parent))

# Tests share two cores with each other's subprocesses; more threads only add contention.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module", autouse=True)
def small_feature_evaluation(request):
    """Every run a test trains ends with the linear probe and the t-SNE maps (erlmr.analysis.features). At
    their real sizes they took a third of the suite's time, in tests that measure something else; there
    they run the same code on fewer rows, two C values and t-SNE's fewest iterations. Modules that test
    the probe and the maps are marked ``feature_evaluation`` and keep the real sizes. Module-scoped (and
    autouse, so set up first) to cover the runs of module-scoped fixtures too."""
    if request.node.get_closest_marker("feature_evaluation") is not None:
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(features, "PROBE_ROWS", {"train": 300, "val": 200})
        patch.setattr(features, "REGULARIZATIONS", (0.1, 10.0))
        patch.setattr(features, "MAP_POINTS", 100)
        patch.setattr(features, "MAP_ITERATIONS", 250)
        yield


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
