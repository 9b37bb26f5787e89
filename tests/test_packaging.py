"""The slim core: what `import erlmr` loads, and the message each optional feature gives without its extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import erlmr
from erlmr.analysis.report import write_report
from erlmr.data.avdigits import build_avdigits
from erlmr.data.base import load_dataset
from erlmr.data.media import load_mat, read_image, read_wav
from erlmr.errors import ErlmrError, MissingDependencyError
from erlmr.extras import require
from erlmr.training.tensorboard import TensorBoardLogger

SRC = Path(__file__).resolve().parents[1] / "src"
OPTIONAL = ["aeon", "scipy", "sklearn", "PIL", "matplotlib", "tensorboard", "optuna", "lightning", "av"]


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_the_drop_in_pieces_import_without_trainer_data_or_optional_packages():
    heavy = ("erlmr.training", "erlmr.data", "erlmr.methods", "erlmr.analysis", "erlmr.config")
    code = f"""
import json, sys
from erlmr.nn import EulerRepresentation, MMCLoss, min_norm_weights, ConcatFusion
from erlmr import EulerRepresentation, MMCLoss, min_norm_weights, ConcatFusion, MultiModalModel
before = sorted(m for m in sys.modules if m.split(".")[0] in {OPTIONAL!r} or m.startswith({heavy!r}))
import erlmr
erlmr.train  # the lazy name pulls the trainer in on first use
assert callable(erlmr.data.load_dataset)  # subpackages stay reachable as attributes
print(json.dumps({{"before": before, "trainer": "erlmr.training.trainer" in sys.modules,
                  "train": erlmr.train.__module__}}))
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["before"] == []
    assert loaded["trainer"] and loaded["train"] == "erlmr.training.trainer"


def test_every_public_name_resolves_and_an_unknown_one_is_an_attribute_error():
    for name in erlmr.__all__:
        assert getattr(erlmr, name) is not None
    assert set(erlmr.__all__) <= set(dir(erlmr))
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        _ = erlmr.trian


def test_require_returns_the_module_or_names_the_pip_package_and_extra(monkeypatch):
    assert require("json", "report", "x") is json
    monkeypatch.setitem(sys.modules, "sklearn.linear_model", None)
    with pytest.raises(
        MissingDependencyError, match=r"probing needs scikit-learn: pip install 'erlmr\[probes\]'"
    ) as caught:
        require("sklearn.linear_model", "probes", "probing")
    assert isinstance(caught.value, ErlmrError) and isinstance(caught.value, ImportError)


def write_array_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        a, b = rng.normal(size=(2, 16, 3)).astype(np.float32)
        np.savez(root / f"{split}.npz", a=a, b=b, label=np.arange(16) % 2)
    return root


# (module that is missing, extra named, action that needs it)
FEATURES = {
    "report": ("matplotlib", "report", lambda tmp: write_report(tmp)),
    "tensorboard": ("torch.utils.tensorboard", "tensorboard", lambda tmp: TensorBoardLogger()),
    "basicmotions": ("aeon.datasets", "datasets", lambda tmp: load_dataset("basicmotions", None, 0, 0.1, {})),
    "avdigits build": ("sklearn.datasets", "datasets", lambda tmp: build_avdigits(tmp / "av", clips=20)),
    "wav": ("scipy.io.wavfile", "datasets", lambda tmp: read_wav(tmp / "a.wav")),
    "image": ("PIL.Image", "datasets", lambda tmp: read_image(tmp / "a.jpg", 8)),
    "matlab": ("scipy.io", "datasets", lambda tmp: load_mat(tmp / "a.mat", ["d"])),
}


@pytest.mark.parametrize("feature", FEATURES)
def test_each_optional_feature_names_its_extra_when_its_package_is_missing(feature, monkeypatch, tmp_path):
    module, extra, action = FEATURES[feature]
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingDependencyError, match=rf"pip install 'erlmr\[{extra}\]'"):
        action(write_array_folder(tmp_path))


def test_the_cli_lists_and_trains_on_arrays_without_any_optional_package_and_names_the_report_extra(tmp_path):
    data = write_array_folder(tmp_path)
    code = f"""
import sys
sys.modules.update(dict.fromkeys({OPTIONAL!r}, None))  # as if none of them were installed
from erlmr.cli import main
assert main(["list"]) == 0
assert main(["train", "--data", {str(data)!r}, "--epochs", "1", "--batch-size", "4", "--quiet",
             "--run-dir", {str(tmp_path / "run")!r}]) == 0
sys.exit(main(["report", {str(tmp_path / "run")!r}]))
"""
    result = run_python(code)
    assert "basicmotions" in result.stdout and "resnet18" in result.stdout  # the listing
    assert "test accuracy" in result.stdout  # the training run
    assert result.returncode == 2
    assert "the report needs matplotlib: pip install 'erlmr[report]'" in result.stderr
