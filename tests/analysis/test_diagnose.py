"""erlmr.diagnose: the imbalance report of any model equals the trainer's for erlmr's own model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import erlmr
from erlmr.analysis.evaluation import evaluate, imbalance_report
from erlmr.config import ModelConfig
from erlmr.data import load_dataset
from erlmr.errors import DataError
from erlmr.methods import build_method
from support import context_for, model_for


def trained_model():
    splits = load_dataset(
        "synthetic", None, 0, 0.25, {"strengths": [2.5, 1.0, 0.8], "train_size": 120, "test_size": 64}
    )
    torch.manual_seed(0)
    model = model_for(ModelConfig(encoder_options={m: {"hidden": 16} for m in splits.modalities}), splits, False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    for _ in range(3):
        for inputs, labels in splits.train.batches(32):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(inputs).logits, labels).backward()
            optimizer.step()
    return splits, model.eval()


class UserModel(nn.Module):
    """A user's own model: a dict of modality tensors in, a dict with logits out; a missing modality
    (left out of the dict, or named in ``absent``) contributes zero features, as in erlmr."""

    def __init__(self, model):
        super().__init__()
        self.encoders, self.head, self.modalities = model.encoders, model.head, model.modalities

    def forward(self, inputs, absent=()):
        batch = len(next(iter(inputs.values())))
        features = [
            self.encoders[m](inputs[m]) if m in inputs and m not in absent else torch.zeros(batch, w)
            for m, w in zip(self.modalities, self.head.in_features)
        ]
        out = self.head(features)
        return {"logits": out.logits, "modality_logits": dict(zip(self.modalities, out.modality_logits))}


def test_a_users_model_gets_the_trainers_numbers_for_the_equivalent_multimodal_model():
    splits, model = trained_model()
    method = build_method("joint", {}, model, context_for(splits))
    expected = imbalance_report(model, method, splits.test, 32, torch.device("cpu"))
    plain = evaluate(model, method, splits.test, 32, torch.device("cpu"))
    for candidate in (UserModel(model), model):  # a plain user module, and erlmr's model itself (absent keyword)
        report = erlmr.diagnose(candidate, splits.test.batches(32))
        assert report["subset_accuracy"] == pytest.approx(expected["subset_accuracy"])
        assert report["contribution"] == pytest.approx(expected["contribution"])
        assert report["imbalance_degree"] == pytest.approx(expected["imbalance_degree"])
        assert report["missing_modality_accuracy"] == pytest.approx(expected["missing_modality_accuracy"])
        assert report["accuracy"] == pytest.approx(plain["accuracy"])
        assert report["modality_accuracy"] == pytest.approx(plain["modality_accuracy"])


def test_a_positional_model_gets_zeros_for_a_missing_modality():
    seen = []

    class TwoInputs(nn.Module):
        def forward(self, audio, visual):
            seen.append((audio.abs().sum().item(), visual.abs().sum().item()))
            return audio[:, :3] + visual[:, :3]

    wrapped = erlmr.PositionalModel(TwoInputs(), ["audio", "visual"])
    batch = ({"audio": torch.ones(4, 5), "visual": torch.full((4, 5), 2.0)}, torch.tensor([0, 1, 2, 0]))
    report = erlmr.diagnose(wrapped, [batch])
    assert set(report["contribution"]) == {"audio", "visual"} and report["modality_accuracy"] == {}
    assert (0.0, 40.0) in seen and (20.0, 0.0) in seen and (0.0, 0.0) in seen  # missing ones as zeros


def test_a_model_that_cannot_predict_without_inputs_gets_the_most_frequent_class_for_the_empty_set():
    batch = ({"a": torch.ones(4, 1), "b": torch.ones(4, 1)}, torch.tensor([0, 1, 2, 0]))
    report = erlmr.diagnose(lambda inputs: torch.eye(3)[[1, 1, 1, 1]], [batch])
    assert report["subset_accuracy"]["none"] == pytest.approx(0.5)  # class 0, 2 of 4
    assert report["subset_accuracy"]["a+b"] == pytest.approx(0.25)


def test_bad_input_is_named():
    with pytest.raises(DataError, match="no batches"):
        erlmr.diagnose(lambda inputs: None, [])
    with pytest.raises(DataError, match="needs logits"):
        erlmr.diagnose(lambda inputs: "nope", [({"a": torch.ones(2, 1), "b": torch.ones(2, 1)}, torch.tensor([0, 1]))])
