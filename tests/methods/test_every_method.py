"""What every registered method must do, whoever wrote it: train two epochs on a real two-modality set
and on three-modality synthetic data with finite losses, predict with a modality missing where it says
it can, and carry all of its state in its state dict. A new method is covered here without an edit."""

from __future__ import annotations

import json
import math

import pytest
import torch

import erlmr
from erlmr.methods import METHODS
from support import setup_three

SMALL_CNN = {"acc": {"channels": 8, "layers": 2}, "gyro": {"channels": 8, "layers": 2}}
DATASETS = {
    "basicmotions": ("basicmotions", {}, SMALL_CNN),
    "synthetic3": ("synthetic", {"strengths": [2.5, 1.0, 0.8], "train_size": 96, "test_size": 32}, {}),
}
#: every registered method, and compositions of a step method with gradient modulators
MODULATORS = [name for name in METHODS if METHODS.get(name).modulates_gradients]
NAMES = [*METHODS, *(f"joint+{m}" for m in MODULATORS), *(f"erlmr+{m}" for m in MODULATORS)]


def options_for(name: str, modalities: list[str]) -> dict:
    """Default options, and the one option a method cannot do without (unimodal's modality)."""
    return {"modality": modalities[-1]} if METHODS.get(name.split("+")[0]).needs_options else {}


@pytest.mark.parametrize("dataset", list(DATASETS))
@pytest.mark.parametrize("name", NAMES)
def test_trains_two_epochs_with_finite_losses(name, dataset, tmp_path):
    data, data_options, encoder_options = DATASETS[dataset]
    modalities = ["acc", "gyro"] if data == "basicmotions" else ["m0", "m1", "m2"]
    result = erlmr.train(
        {
            "data": {"dataset": data, "options": data_options},
            "model": {"encoder_options": encoder_options},
            "method": {"name": name, "options": options_for(name, modalities)},
            "train": {"epochs": 2, "batch_size": 16, "quiet": True, "run_dir": str(tmp_path / "run"), "device": "cpu"},
        }
    )
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    assert all(math.isfinite(r["train_loss"]) for r in records)
    test = result.summary["test"]
    assert 0 <= test["accuracy"] <= 1 and set(test["modality_accuracy"]) == set(modalities)
    modulator = name.split("+")[-1]
    if "+" in name:  # a modulator logs its coefficient per modality
        assert {f"{modulator}_coefficient_{m}" for m in modalities} <= set(records[-1]["method"])


@pytest.mark.parametrize("name", list(METHODS))
def test_state_dict_holds_every_state_and_round_trips(name):
    splits, model, method = setup_three(name, options_for(name, ["m0", "m1", "m2"]))
    generator = torch.Generator().manual_seed(1)
    state = method.state_dict()
    for value in state.values():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            value.copy_(torch.randn(value.shape, generator=generator))
    _, _, fresh = setup_three(name, options_for(name, ["m0", "m1", "m2"]), seed=5)
    fresh.load_state_dict(state)
    for key, value in fresh.state_dict().items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(value, state[key], msg=f"{name}: {key}")


@pytest.mark.parametrize("name", [n for n in METHODS if METHODS.get(n).supports_missing_modalities])
def test_predicts_with_a_modality_missing(name):
    splits, model, method = setup_three(name, options_for(name, ["m0", "m1", "m2"]))
    inputs, labels = splits.test.__getitems__(range(8))
    model.eval()
    method.eval()
    with torch.no_grad():
        output = method.predict(model, {m: x for m, x in inputs.items() if m != "m1"})
    assert output.logits.shape == (8, splits.num_classes) and torch.isfinite(output.logits).all()
