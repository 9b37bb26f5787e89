"""A new user's raw two-view data (scikit-learn's digits, one view's pixels multiplied by 1 .. 10^4):
with the defaults every view is learned, fusion beats both views, predictions on raw arrays equal the
evaluation's, and the data check warns when normalisation is turned off."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scaled_views import SCALED, write_scaled_digits

import erlmr
from erlmr.analysis.datacheck import check_dataset
from erlmr.analysis.evaluation import evaluate
from erlmr.cli import main
from erlmr.data import load_dataset
from erlmr.errors import TrainingDivergedError

EPOCHS = 8
# The always-blank border pixels of the digits are constant features; each run says so once.
pytestmark = pytest.mark.filterwarnings("ignore:modality '(left|right)' is constant on the train split")
RUNS = {
    "left alone": ("unimodal", {"modality": "left"}),
    "right alone": ("unimodal", {"modality": "right"}),
    "joint": ("joint", {}),
    "erlmr": ("erlmr", {}),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_scaled_digits(tmp_path_factory.mktemp("scaled") / "digits")


def config(folder, run_dir, method: str, options: dict, normalize: str = "auto") -> dict:
    return {
        "data": {"dataset": "arrays", "root": str(folder), "normalize": normalize},
        "method": {"name": method, "options": options},
        "train": {"epochs": EPOCHS, "batch_size": 32, "device": "cpu", "quiet": True, "run_dir": str(run_dir)},
    }


@pytest.fixture(scope="module")
def runs(folder, tmp_path_factory):
    """Each run of :data:`RUNS` trained on the defaults (data.normalize: auto, i.e. standard here)."""
    out = tmp_path_factory.mktemp("runs")
    return {name: erlmr.train(config(folder, out / name.replace(" ", "-"), *spec)) for name, spec in RUNS.items()}


def test_the_scaled_view_alone_beats_chance_by_a_wide_margin(runs, folder, tmp_path):
    assert runs["right alone"].summary["test"]["accuracy"] > 0.8  # chance: 0.1
    assert runs["left alone"].summary["test"]["accuracy"] > 0.8
    try:  # the same run on the raw scales: it diverges, or learns next to nothing
        raw = erlmr.train(config(folder, tmp_path / "raw", "unimodal", {"modality": SCALED}, normalize="none"))
        assert raw.summary["test"]["accuracy"] < 0.5
    except TrainingDivergedError:
        pass


@pytest.mark.parametrize("kind", ["robust", "minmax"])
def test_the_other_kinds_also_learn_the_scaled_view(folder, tmp_path, kind):
    result = erlmr.train(config(folder, tmp_path / kind, "unimodal", {"modality": SCALED}, normalize=kind))
    assert result.summary["test"]["accuracy"] > 0.7
    assert erlmr.load_run(result.run_dir).model.normalizer.kind == kind


def test_fusion_reaches_the_better_view_alone(runs):
    best_view = max(runs[name].summary["test"]["accuracy"] for name in ("left alone", "right alone"))
    for method in ("joint", "erlmr"):
        assert runs[method].summary["test"]["accuracy"] >= best_view - 0.02, method


def test_statistics_come_from_the_train_split_alone(runs, folder):
    run = erlmr.load_run(runs["joint"].run_dir)
    assert run.model.normalizer.kind == "standard"
    train = load_dataset("arrays", str(folder), 0, 0.1, {}).train
    shift, scale = run.model.normalizer.statistics(SCALED)
    values = train.inputs[SCALED].double()
    torch.testing.assert_close(shift.double(), values.mean(0), rtol=1e-5, atol=1e-3)
    varying = values.std(0) > 0
    torch.testing.assert_close(scale.double()[varying], values.std(0, unbiased=False)[varying], rtol=1e-5, atol=1e-6)


def test_predict_on_raw_arrays_equals_erlmr_eval(runs, folder, capsys):
    run_dir = runs["joint"].run_dir
    with np.load(folder / "test.npz") as test:
        raw = {m: test[m] for m in ("left", "right")}
        labels = torch.from_numpy(test["label"])
    run = erlmr.load_run(run_dir)
    predicted = erlmr.predict(run, raw).logits.argmax(1)
    test = load_dataset("arrays", str(folder), 0, 0.1, {}).test  # what `erlmr eval` evaluates, as it loads it
    evaluated = evaluate(run.model, run.method, test, 64, torch.device("cpu"))["predictions"]
    assert torch.equal(predicted, evaluated)
    assert main(["eval", str(run_dir), "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(float((predicted == labels).float().mean()))
    run.model.normalizer = None  # the same weights fed the raw scales: the statistics are what makes them work
    assert (erlmr.predict(run, raw).logits.argmax(1) == predicted).float().mean() < 0.5


def test_data_check_warns_without_normalisation_and_its_probe_matches_trained_views(runs, folder):
    raw = check_dataset("arrays", str(folder), normalize="none")
    spread = [w["message"] for w in raw["warnings"] if w["code"] == "scale_spread"]
    assert any(message.startswith(f"modality {SCALED!r}: feature scales spread over") for message in spread)
    report = check_dataset("arrays", str(folder))
    assert not [w for w in report["warnings"] if "scale" in w["code"]]
    for view in ("left", "right"):
        trained = runs[f"{view} alone"].summary["test"]["modality_accuracy"][view]
        assert abs(report["probe"]["accuracy"]["test"][view] - trained) < 0.06, view


def test_grouped_folder_keeps_groups_out_of_validation(tmp_path):
    splits = load_dataset("arrays", str(write_scaled_digits(tmp_path / "grouped", group_size=5)), 0, 0.1, {})
    train, val = set(splits.groups["train"].tolist()), set(splits.groups["val"].tolist())
    assert val and not train & val
    assert 0.07 < len(splits.val) / (len(splits.train) + len(splits.val)) < 0.13


@pytest.mark.parametrize("method", sorted(erlmr.methods.METHODS))
def test_every_method_trains_on_the_raw_user_data_at_its_defaults_without_diverging(folder, tmp_path, method):
    options = {"modality": SCALED} if erlmr.methods.METHODS.get(method).needs_options else {}
    run = config(folder, tmp_path / "run", method, options)
    run["train"]["epochs"] = 3
    result = erlmr.train(run)  # a divergence raises TrainingDivergedError
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["train_loss"]) for r in records)
    assert result.summary["test"]["accuracy"] > 0.5, method
