"""The linear probe and the feature maps of trained encoders: what they score on features whose class
information is known, that the test split plays no part in choosing the probe, and what a run writes."""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pytest
import torch
import yaml

from erlmr.analysis import features
from erlmr.analysis.features import feature_maps, linear_probe, record_features, stratified_rows
from erlmr.analysis.report import write_report
from erlmr.config import ModelConfig, TrainConfig
from erlmr.data import load_dataset
from erlmr.methods import build_method
from erlmr.training.reload import load_run
from erlmr.training.run_folder import FEATURE_MAPS, RunFolder
from erlmr.training.trainer import train
from support import context_for, model_for

pytestmark = pytest.mark.feature_evaluation  # the probe and the maps at their real sizes (tests/conftest.py)
CLASSES = 5


def separable(n: int, seed: int, width: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose class is one far-away centre each (every row is nearest its own class centre) plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % CLASSES
    centres = 8.0 * np.eye(CLASSES, width)
    return (centres[labels] + rng.standard_normal((n, width))).astype(np.float32), labels


def split_of(n: int, seed: int, shuffle: bool = False) -> features.Features:
    x, y = separable(n, seed)
    if shuffle:
        y = np.random.default_rng(seed + 100).permutation(y)
    return {"m": x, "m_noise": np.random.default_rng(seed + 7).standard_normal(x.shape).astype(np.float32)}, y


def test_the_probe_reads_separable_features_perfectly_and_shuffled_labels_at_chance():
    scores = linear_probe(split_of(300, 0), split_of(100, 1), lambda: split_of(500, 2), seed=0)
    assert scores.val["m"] == 1.0 and scores.test["m"] == 1.0
    assert abs(scores.test["m_noise"] - 1 / CLASSES) < 0.08  # noise features: chance (500 rows: std 0.018)
    assert set(scores.regularization.values()) <= set(features.REGULARIZATIONS)
    shuffled = linear_probe(
        split_of(300, 0, shuffle=True), split_of(100, 1, shuffle=True), lambda: split_of(500, 2, shuffle=True), seed=0
    )
    assert abs(shuffled.test["m"] - 1 / CLASSES) < 0.08


def test_the_regularisation_is_the_one_validation_prefers():
    # 30 training rows, 40 noise features: the weakest regularisation overfits, validation must say so
    rng = np.random.default_rng(0)

    def rows(n):
        y = np.arange(n) % 2
        x = np.concatenate([(y[:, None] * 1.0 + rng.standard_normal((n, 1))), rng.standard_normal((n, 40))], 1)
        return {"m": x.astype(np.float32)}, y

    train, val = rows(30), rows(400)
    chosen = linear_probe(train, val, lambda: rows(400), seed=0)
    fitted = {
        c: features.fitted_probe((train[0]["m"], train[1]), 0, c, features.PROBE_ITERATIONS).score(val[0]["m"], val[1])
        for c in features.REGULARIZATIONS
    }
    best = max(fitted.values())
    assert chosen.val["m"] == best
    assert chosen.regularization["m"] == min(c for c, a in fitted.items() if a == best)  # ties: the stronger one
    assert best > fitted[max(features.REGULARIZATIONS)]  # the test can tell a selection from a fixed C


def test_stratified_rows_keep_each_class_share_and_depend_on_the_seed():
    labels = np.array([0] * 600 + [1] * 300 + [2] * 100)
    rows = stratified_rows(labels, 100, seed=3)
    assert len(rows) == 100 and np.all(np.diff(rows) > 0)
    assert np.bincount(labels[rows]).tolist() == [60, 30, 10]
    assert not np.array_equal(rows, stratified_rows(labels, 100, seed=4))
    assert np.array_equal(stratified_rows(labels, 5000, seed=3), np.arange(1000))


def test_the_feature_map_keeps_separable_classes_apart():
    test = split_of(200, 0)
    arrays = feature_maps(test, [f"c{i}" for i in range(CLASSES)], seed=0)
    assert arrays["coordinates"].shape == (2, 200, 2) and arrays["modalities"].tolist() == ["m", "m_noise"]
    assert np.array_equal(arrays["labels"], test[1][arrays["rows"]])

    def neighbour_accuracy(points):  # each point labelled by its 5 nearest others in the map
        distances = torch.cdist(torch.from_numpy(points), torch.from_numpy(points)).fill_diagonal_(float("inf"))
        votes = arrays["labels"][distances.topk(5, largest=False).indices.numpy()]
        return np.mean([np.bincount(v, minlength=CLASSES).argmax() == y for v, y in zip(votes, arrays["labels"])])

    assert neighbour_accuracy(arrays["coordinates"][0]) > 0.95
    assert neighbour_accuracy(arrays["coordinates"][1]) < 0.4  # noise features: no class structure


def test_constant_features_get_a_point_not_a_crash(tmp_path):
    # scikit-learn's t-SNE with PCA initialisation kills the process (SIGSEGV) on rows that are all equal
    (x, y), dead = split_of(60, 0), np.zeros((60, 12), np.float32)
    arrays = feature_maps(({"dead": dead, "m": x["m"]}, y), [str(c) for c in range(CLASSES)], seed=0)
    assert not arrays["coordinates"][0].any() and np.ptp(arrays["coordinates"][1]) > 0


# ------------------------------------------------------------------------------ on a model and its splits
@pytest.fixture(scope="module")
def setup():
    splits = load_dataset("synthetic", None, 0, 0.2, {"dim": 8, "train_size": 120, "test_size": 60})
    torch.manual_seed(0)
    model = model_for(ModelConfig(encoder_options={m: {"hidden": 16} for m in splits.modalities}), splits, False)
    return splits, model, build_method("joint", {}, model, context_for(splits, 32))


class Tripwire:
    """A stand-in for the test split that raises if touched before ``ready()`` says the probe is chosen."""

    def __init__(self, split, ready):
        self._split, self._ready = split, ready

    def __len__(self):
        self._check("len")
        return len(self._split)

    def __getattr__(self, name):
        self._check(name)
        return getattr(self._split, name)

    def _check(self, what):
        if not self._ready():
            raise AssertionError(f"the test split was touched ({what}) before the probe was chosen")


def summary_of(splits, model, method, folder, **config) -> dict:
    summary = {"val": {}, "test": {}, "cost": {}}
    record_features(summary, model, method, splits, TrainConfig(batch_size=32, **config), torch.device("cpu"), folder)
    return summary


def test_the_test_split_is_read_only_after_every_modality_probe_is_chosen(setup, tmp_path, monkeypatch):
    splits, model, method = setup
    reference = summary_of(splits, model, method, RunFolder(tmp_path / "a"), feature_maps=False)
    chosen = []
    choose = features.choose_regularization
    monkeypatch.setattr(features, "choose_regularization", lambda *a, **k: chosen.append(1) or choose(*a, **k))
    guarded = dataclasses.replace(splits, test=Tripwire(splits.test, lambda: len(chosen) == len(splits.modalities)))
    summary = summary_of(guarded, model, method, RunFolder(tmp_path / "b"), feature_maps=False)
    assert summary["test"]["linear_probe"] == reference["test"]["linear_probe"]
    assert set(summary["test"]["linear_probe"]) == set(splits.modalities)
    assert summary["linear_probe"]["rows"] == {"train": len(splits.train), "val": len(splits.val), "test": 60}


def test_without_scikit_learn_both_are_skipped_naming_the_extra(setup, tmp_path, monkeypatch):
    splits, model, method = setup
    monkeypatch.setitem(sys.modules, "sklearn.linear_model", None)
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    (tmp_path / "run").mkdir()
    summary = summary_of(splits, model, method, RunFolder(tmp_path / "run"))
    assert summary["linear_probe"] == {"skipped": "the linear probe needs scikit-learn: pip install 'erlmr[probes]'"}
    assert summary["feature_maps"] == {"skipped": "the feature map needs scikit-learn: pip install 'erlmr[probes]'"}
    assert "linear_probe" not in summary["test"] and not (tmp_path / "run" / FEATURE_MAPS).exists()


def test_a_unimodal_run_probes_only_its_own_modality(setup, tmp_path):
    splits, model, _ = setup
    method = build_method("unimodal", {"modality": "m1"}, model, context_for(splits, 32))
    summary = summary_of(splits, model, method, RunFolder(tmp_path / "run"), feature_maps=False)
    assert list(summary["test"]["linear_probe"]) == ["m1"]


# ---------------------------------------------------------------------------------- in a training run
SMALL = {"dataset": "synthetic", "options": {"train_size": 96, "test_size": 48, "dim": 8}}


def test_switched_off_the_run_has_neither_and_the_report_draws_no_map(run_config, tmp_path):
    result = train(run_config(data=SMALL, train={"linear_probe": False, "feature_maps": False}))
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["linear_probe"] == {"skipped": "train.linear_probe is false"}
    assert summary["feature_maps"] == {"skipped": "train.feature_maps is false"}
    assert "linear_probe" not in summary["test"] and "linear_probe" not in summary["val"]
    assert not (result.run_dir / FEATURE_MAPS).exists()
    html = write_report(result.run_dir, tmp_path / "report").read_text()
    assert "feature-map" not in html and "linear probe" not in html


def test_a_run_from_before_the_switches_existed_still_loads(run_config):
    result = train(run_config(data=SMALL, train={"epochs": 1, "feature_maps": False}))
    config = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    for key in ("linear_probe", "feature_maps"):  # as an older erlmr wrote them
        del config["train"][key]
    (result.run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    state = torch.load(result.run_dir / "best.pt", weights_only=False)
    state["config"] = config
    torch.save(state, result.run_dir / "best.pt")
    assert load_run(result.run_dir).modalities == ["m0", "m1"]
