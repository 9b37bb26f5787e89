"""load_run and predict: a trained run rebuilt from its folder alone, predicting with some modalities absent."""

from __future__ import annotations

import pytest
import torch
import yaml

import erlmr
from erlmr.data import load_dataset
from erlmr.errors import CheckpointError, ConfigError, DataError
from erlmr.methods.base import Method
from erlmr.training.trainer import evaluate

from .conftest import small_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return erlmr.train(small_config(tmp_path_factory.mktemp("predict") / "run", train={"epochs": 2}))


@pytest.fixture(scope="module")
def test_split():
    return load_dataset("synthetic", None, 0, 0.1, {"train_size": 400, "test_size": 200}).test


def test_load_run_rebuilds_the_best_model_without_the_dataset(trained, test_split):
    run = erlmr.load_run(trained.run_dir)
    assert run.modalities == ["m0", "m1"] and run.classes == [f"class{c}" for c in range(4)]
    assert run.config.method.name == "erlmr" and not run.model.training
    result = evaluate(run.model, run.method, test_split, 64, torch.device("cpu"))
    assert result["accuracy"] == trained.summary["test"]["accuracy"]


@pytest.mark.parametrize("absent", [[], ["m1"], ["m0"]])
def test_predict_with_a_subset_of_modalities_matches_evaluation_with_them_absent(trained, test_split, absent):
    run = erlmr.load_run(trained.run_dir)
    given = {m: x.numpy() for m, x in test_split.inputs.items() if m not in absent}
    prediction = erlmr.predict(run, given, batch_size=64)
    expected = evaluate(run.model, run.method, test_split, 64, torch.device("cpu"), absent=absent)
    assert prediction.logits.shape == (200, 4) and prediction.modalities == [m for m in ["m0", "m1"] if m not in absent]
    assert torch.equal(prediction.logits.argmax(1), expected["predictions"])
    assert torch.allclose(prediction.probabilities.sum(1), torch.ones(200))
    assert prediction.labels[:3] == [run.classes[i] for i in expected["predictions"][:3].tolist()]


def test_leaving_a_modality_out_changes_the_prediction(trained, test_split):
    run = erlmr.load_run(trained.run_dir)
    both = erlmr.predict(run, dict(test_split.inputs)).logits
    one = erlmr.predict(trained.run_dir, {"m0": test_split.inputs["m0"]}).logits  # a path works too
    assert not torch.allclose(both, one)


def test_a_method_that_needs_every_modality_says_so(trained, test_split, monkeypatch):
    monkeypatch.setattr(Method, "supports_missing_modalities", False)
    run = erlmr.load_run(trained.run_dir)
    with pytest.raises(ConfigError, match=r"method 'erlmr' needs every modality to predict; \['m1'\] missing"):
        erlmr.predict(run, {"m0": test_split.inputs["m0"]})
    assert erlmr.predict(run, dict(test_split.inputs)).logits.shape == (200, 4)


@pytest.mark.parametrize(
    "inputs, message",
    [
        (
            {"m2": torch.zeros(3, 32)},
            r"inputs name modalities \['m2'\]; this run takes a non-empty subset of \['m0', 'm1'\]",
        ),
        ({}, r"non-empty subset"),
        ({"m0": torch.zeros(3, 31)}, r"modality 'm0' has shape \(3, 31\); this model takes \(N, 32\)"),
        ({"m0": [["a"] * 32]}, r"modality 'm0' has dtype <U1; pass numeric"),
        ({"m0": torch.zeros(3, 32), "m1": torch.zeros(2, 32)}, r"different sample counts \{'m0': 3, 'm1': 2\}"),
        (
            {"m0": torch.tensor([[0.0] * 32, [float("nan")] * 32])},
            r"modality 'm0' has NaN or Inf in 1 sample\(s\), first at index 1",
        ),
    ],
)
def test_bad_prediction_inputs(trained, inputs, message):
    with pytest.raises(DataError, match=message):
        erlmr.predict(erlmr.load_run(trained.run_dir), inputs)


def test_load_run_refuses_a_checkpoint_that_does_not_match_config_yaml(trained, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained.run_dir, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["model"]["euler_dim"] = 64
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(
        CheckpointError,
        match=r"best\.pt was written by a different configuration .*model\.euler_dim: 32 in the checkpoint, 64 now",
    ):
        erlmr.load_run(copy)
    (copy / "config.yaml").unlink()  # the checkpoint alone is enough
    assert erlmr.load_run(copy, checkpoint="last.pt").model.euler.out_features == 32
    with pytest.raises(CheckpointError, match=r"missing\.pt does not exist"):
        erlmr.load_run(copy, checkpoint="missing.pt")
