"""The user's own encoders (and other plug-ins): ``module:attribute`` paths and entry points."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from erlmr.analysis.prediction import load_run, predict
from erlmr.cli import main
from erlmr.encoders import ENCODERS, build_encoder
from erlmr.errors import ConfigError
from erlmr.nn.fusion import FUSIONS

USER_CODE = """
import torch
from torch import nn

from erlmr.nn.fusion import FusionHead, FusionOutput


class TinyEncoder(nn.Module):
    '''A user's encoder: one linear layer over the flattened sample.'''

    def __init__(self, shape, hidden=8):
        super().__init__()
        self.layer = nn.Linear(int(torch.tensor(shape).prod()), hidden)
        self.output_shape = (hidden,)

    def forward(self, x):
        return torch.relu(self.layer(x.flatten(1)))


class NoShape(nn.Module):
    def __init__(self, shape):
        super().__init__()


class MeanFusion(FusionHead):
    '''A user's fusion head: one linear layer per modality, logits averaged.'''

    def __init__(self, in_features, num_classes):
        super().__init__(in_features, num_classes)
        self.heads = nn.ModuleList(nn.Linear(d, num_classes) for d in self.in_features)

    def forward(self, features):
        logits = [head(x) for head, x in zip(self.heads, features)]
        return FusionOutput(torch.stack(logits).mean(0), logits)
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch, request) -> str:
    """A module of the user's own, importable by a name no other test uses."""
    name = f"user_encoders_{request.node.name.replace('[', '_').replace(']', '').replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(USER_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_an_import_path_builds_the_users_encoder_with_its_options(user_module):
    encoder = build_encoder(f"{user_module}:TinyEncoder", (3, 10), {"hidden": 5})
    assert type(encoder).__name__ == "TinyEncoder" and encoder.output_shape == (5,)
    assert encoder(torch.randn(2, 3, 10)).shape == (2, 5)


def test_a_users_encoder_is_checked_like_a_registered_one(user_module):
    with pytest.raises(ConfigError, match=r"must set output_shape .* it has None"):
        build_encoder(f"{user_module}:NoShape", (4,), {})
    with pytest.raises(
        ConfigError, match=r"unknown key\(s\) \['width'\] in options of encoder .*TinyEncoder'; valid keys: hidden"
    ):
        build_encoder(f"{user_module}:TinyEncoder", (4,), {"width": 3})
    with pytest.raises(ConfigError, match=f"module '{user_module}' has no attribute 'Missing'"):
        build_encoder(f"{user_module}:Missing", (4,), {})
    with pytest.raises(ConfigError, match="cannot import 'no_such_package.encoders'.*PYTHONPATH"):
        build_encoder("no_such_package.encoders:Thing", (4,), {})
    with pytest.raises(ConfigError, match="unknown encoder 'resnet81'; valid encoders: .*resnet18.*'module:attribute'"):
        build_encoder("resnet81", (3, 8, 8), {})


def test_a_module_in_the_current_folder_is_found_as_under_python_m(tmp_path, monkeypatch):
    (tmp_path / "cwd_only_encoders.py").write_text(USER_CODE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    try:
        assert ENCODERS.get("cwd_only_encoders:TinyEncoder").__name__ == "TinyEncoder"
    finally:
        sys.modules.pop("cwd_only_encoders", None)


def test_cli_trains_with_a_users_encoder_and_fusion_and_the_run_predicts(user_module, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(
        [
            "train",
            "--dataset",
            "synthetic",
            "--epochs",
            "1",
            "--quiet",
            "--device",
            "cpu",
            "--run-dir",
            str(run_dir),
            "--set",
            "data.options.train_size=40",
            "--set",
            "data.options.test_size=20",
            "--set",
            "data.options.dim=6",
            "--set",
            f"model.encoders.m0={user_module}:TinyEncoder",
            "--set",
            "model.encoder_options.m0.hidden=7",
            "--set",
            f"model.fusion={user_module}:MeanFusion",
            "--set",
            "model.shared_projection=false",
            "--method",
            "erlmr",
        ]
    )
    assert code == 0, capsys.readouterr().err
    run = load_run(run_dir)
    assert type(run.model.encoders["m0"]).__name__ == "TinyEncoder"
    assert run.model.encoders["m0"].layer.out_features == 7
    assert type(run.model.head).__name__ == "MeanFusion"
    prediction = predict(run, {"m0": torch.randn(3, 6), "m1": torch.randn(3, 6)})
    assert prediction.probabilities.shape == (3, len(run.classes)) and len(prediction.labels) == 3


def write_distribution(folder: Path, name: str, entry_points: str) -> None:
    """An installed distribution as importlib.metadata finds one: a .dist-info folder on sys.path."""
    info = folder / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


def test_an_entry_point_plug_in_is_listed_and_built_by_name(user_module, tmp_path, capsys):
    write_distribution(
        tmp_path,
        "erlmr_tiny_plugin",
        f"""
        [erlmr.encoders]
        tiny = {user_module}:TinyEncoder
        [erlmr.fusions]
        mean = {user_module}:MeanFusion
    """,
    )
    assert "tiny" in ENCODERS and "mean" in FUSIONS and "tiny" not in FUSIONS
    assert main(["list"]) == 0
    assert f"tiny             plug-in {user_module}:TinyEncoder (from erlmr_tiny_plugin)" in capsys.readouterr().out
    encoder = build_encoder("tiny", (4,), {"hidden": 3})
    assert encoder.output_shape == (3,)
    assert FUSIONS.get("mean").__name__ == "MeanFusion"


def test_a_plug_in_cannot_replace_a_built_in(user_module, tmp_path):
    write_distribution(
        tmp_path,
        "erlmr_shadow_plugin",
        f"""
        [erlmr.encoders]
        mlp = {user_module}:TinyEncoder
    """,
    )
    with pytest.warns(UserWarning, match="'mlp' .* is shadowed by erlmr's own 'mlp'"):
        assert ENCODERS.get("mlp").__module__ == "erlmr.encoders.basic"
        ENCODERS.describe()


def test_a_broken_entry_point_names_its_plug_in(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    write_distribution(
        tmp_path,
        "erlmr_broken_plugin",
        """
        [erlmr.encoders]
        broken = not_installed_anywhere.encoders:Broken
    """,
    )
    with pytest.raises(ConfigError, match="plug-in 'broken' .* cannot import 'not_installed_anywhere.encoders'"):
        build_encoder("broken", (4,), {})
