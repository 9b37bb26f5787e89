"""`erlmr data check`: each warning fires on the data it describes (and not on clean data), the probe
reads the real data sets, the CLI prints a table or JSON, and the report shows the check."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import erlmr
from erlmr.analysis.datacheck import check_dataset, format_check
from erlmr.cli import main
from erlmr.data import stratified_split
from erlmr.errors import DataError


def informative(n: int, labels: np.ndarray, width: int, strength: float = 3.0) -> np.ndarray:
    """Class centres (the same for every split) plus noise seeded by the split's size."""
    centres = np.random.default_rng(1).standard_normal((labels.max() + 1, width))
    return (strength * centres[labels] + np.random.default_rng(n).standard_normal((n, width))).astype(np.float32)


def write_arrays(root: Path, n_train: int = 120, n_test: int = 60, meta: dict | None = None, **changes) -> Path:
    """Two informative modalities, 3 classes; ``changes`` = {"train.npz": {"b": array}} replaces arrays."""
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.npz", n_train), ("test.npz", n_test)):
        labels = np.arange(n) % 3
        arrays = {
            "a": informative(n, labels, 6),
            "b": informative(n, labels, 4 * 10).reshape(n, 4, 10),
            "label": labels,
        }
        arrays.update(changes.get(name, {}))
        np.savez(root / name, **arrays)
    if meta is not None:
        (root / "meta.json").write_text(json.dumps(meta))
    return root


def codes(report: dict) -> list[str]:
    return [w["code"] for w in report["warnings"]]


def messages(report: dict, code: str) -> list[str]:
    return [w["message"] for w in report["warnings"] + report["notes"] if w["code"] == code]


def test_clean_data_gets_no_warning_and_informative_probes(tmp_path):
    report = check_dataset("arrays", str(write_arrays(tmp_path / "d")))
    assert report["warnings"] == [] and report["normalization"] == "standard"
    assert report["modalities"]["b"]["shape"] == [4, 10] and report["modalities"]["b"]["statistics_over"] == "channel"
    assert report["splits"]["train"]["samples"] + report["splits"]["val"]["samples"] == 120
    assert report["splits"]["test"]["class_counts"] == [20, 20, 20]
    assert min(report["probe"]["accuracy"]["test"].values()) > 0.9 and report["chance"]["test"] == pytest.approx(1 / 3)
    assert report["duplicates"]["test"] == {"rows": 60, "exact": 0, "near": 0}


def test_scales_spread_over_orders_of_magnitude_warn_only_without_normalisation(tmp_path):
    train = informative(120, np.arange(120) % 3, 6) * np.logspace(0, 5, 6, dtype=np.float32)
    test = informative(60, np.arange(60) % 3, 6) * np.logspace(0, 5, 6, dtype=np.float32)
    root = write_arrays(tmp_path / "d", **{"train.npz": {"a": train}, "test.npz": {"a": test}})
    raw = check_dataset("arrays", str(root), normalize="none")
    assert codes(raw) == ["scale_spread"]
    spread = re.match(
        r"modality 'a': feature scales spread over (\d\.\d) orders of magnitude", messages(raw, "scale_spread")[0]
    )
    assert spread and 4.5 < float(spread.group(1)) < 5.5  # factors 1 .. 10^5
    assert "Set data.normalize=standard" in messages(raw, "scale_spread")[0]
    assert check_dataset("arrays", str(root), normalize="robust")["warnings"] == []
    with np.load(root / "train.npz") as train, np.load(root / "test.npz") as test:
        arrays = {"train.npz": dict(train), "test.npz": dict(test)}
    for split in arrays.values():  # each modality on one scale, but 10^4 apart
        split["a"] = split["a"] / np.logspace(0, 5, 6, dtype=np.float32) * 1e4
    write_arrays(root, **arrays)
    (message,) = messages(check_dataset("arrays", str(root), normalize="none"), "modality_scale_spread")
    assert re.fullmatch(
        r"the modalities' typical scales spread over 3\.\d orders of magnitude \(a 1\.\d+e\+04, b \d\.\d+\) "
        r"and data\.normalize is none; set data\.normalize=standard",
        message,
    )


def test_constant_modality_and_constant_features_are_named(tmp_path):
    a = informative(120, np.arange(120) % 3, 6)
    a[:, 2] = 4.0
    root = write_arrays(tmp_path / "d", **{"train.npz": {"a": a, "b": np.ones((120, 4, 10), np.float32)}})
    report = check_dataset("arrays", str(root))
    assert messages(report, "constant_features") == [
        "modality 'a' is constant on the train split in feature 2: no information there"
    ]
    assert messages(report, "constant_modality")[0].startswith("modality 'b' is constant on the train split")
    assert "modality 'b' scores" in messages(report, "probe_chance")[0]
    config = {
        "data": {"dataset": "arrays", "root": str(root)},
        "train": {"epochs": 1, "quiet": True, "device": "cpu", "run_dir": str(tmp_path / "run")},
    }
    with pytest.warns(UserWarning) as caught:
        erlmr.train(config)
    assert {str(w.message) for w in caught} >= {
        "modality 'a' is constant on the train split in feature 2; left unscaled (scale 1)",
        "modality 'b' is constant on the train split: it carries no information",
    }


def test_nonfinite_values_are_counted_by_the_check_and_refused_by_training(tmp_path):
    a = informative(120, np.arange(120) % 3, 6)
    a[:, 4] = np.inf
    b = np.full((60, 4, 10), np.nan, np.float32)
    root = write_arrays(tmp_path / "d", **{"train.npz": {"a": a}, "test.npz": {"b": b}})
    report = check_dataset("arrays", str(root))
    assert messages(report, "nonfinite") == [
        "modality 'a' holds 120 NaN/Inf value(s) (train 108, val 12) in feature 4; training refuses them: clean or "
        "drop those samples",
        "modality 'b' holds 2400 NaN/Inf value(s) (test 2400) in channels 0, 1, 2, 3; training refuses them: clean or "
        "drop those samples",
    ]
    config = {
        "data": {"dataset": "arrays", "root": str(root)},
        "train": {"epochs": 1, "quiet": True, "run_dir": str(tmp_path / "r")},
    }
    with pytest.raises(
        DataError,
        match=r"array 'a' has NaN or Inf in 120 sample\(s\), first at index 0, feature 4; "
        r"feature 4 not finite in any sample",
    ):
        erlmr.train(config)
    a[:, 4] = 0.0
    write_arrays(root, **{"train.npz": {"a": a}, "test.npz": {"b": b}})
    with pytest.raises(
        DataError,
        match=r"test\.npz: array 'b' has NaN or Inf in 60 sample\(s\), first at index 0, "
        r"element \(0, 0\); no value of it is finite",
    ):
        erlmr.train(config)


def test_classes_missing_from_a_split_or_from_every_split(tmp_path):
    labels = np.arange(120) % 5
    labels[labels == 3] = 4  # labels 0..4 without a 3, and no meta.json to name the classes
    test_labels = np.arange(60) % 3
    root = write_arrays(tmp_path / "d", **{"train.npz": {"label": labels}, "test.npz": {"label": test_labels}})
    report = check_dataset("arrays", str(root))
    assert messages(report, "class_without_samples") == [
        "the labels imply 5 classes (0..4) but class '3' has no sample in any split: labels must be 0..K-1 (remap "
        "them), or name the classes in meta.json"
    ]
    assert messages(report, "class_missing") == [
        "class '4' has no sample in the test split: their accuracy is not measured there"
    ]
    named = write_arrays(tmp_path / "named", meta={"classes": ["x", "y", "z", "w"]})
    assert messages(check_dataset("arrays", str(named)), "class_without_samples") == [
        "class 'w' has no sample in any split"
    ]


def test_copies_and_near_copies_of_training_samples_across_splits(tmp_path):
    root = write_arrays(tmp_path / "d")
    with np.load(root / "train.npz") as train:
        copied = {k: train[k][:60].copy() for k in train.files}
    np.savez(root / "test.npz", **copied)
    still_in_train = np.isin(np.arange(60), stratified_split(np.arange(120) % 3, 0.1, 0)[0]).sum()  # the rest is val
    report = check_dataset("arrays", str(root))
    assert report["duplicates"]["test"] == {"rows": 60, "exact": still_in_train, "near": still_in_train}
    assert messages(report, "duplicates") == [
        f"{still_in_train} of 60 checked test samples are exact copies of training samples; if samples are windows of "
        "longer recordings, give each its recording as `group`"
    ]
    noise = np.random.default_rng(2)
    nudged = {
        k: v + 1e-3 * noise.standard_normal(v.shape).astype(np.float32) if k != "label" else v
        for k, v in copied.items()
    }
    np.savez(root / "test.npz", **nudged)
    report = check_dataset("arrays", str(root))
    assert report["duplicates"]["test"] == {"rows": 60, "exact": 0, "near": still_in_train}
    assert codes(report) == ["near_duplicates"]


def test_a_group_in_train_and_test_is_reported(tmp_path):
    root = write_arrays(
        tmp_path / "d",
        **{"train.npz": {"group": np.arange(120) // 10}, "test.npz": {"group": 11 + np.arange(60) // 10}},
    )
    report = check_dataset("arrays", str(root))
    assert report["groups"]["train&val"]["count"] == 0 and report["groups"]["train&test"]["count"] == 1
    assert messages(report, "group_overlap") == [
        "1 group(s) are in both the train and the test split (e.g. 11): "
        "test accuracy will overstate accuracy on new groups"
    ]


def test_without_scikit_learn_the_probe_is_skipped_with_the_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.linear_model", None)
    report = check_dataset("arrays", str(write_arrays(tmp_path / "d")))
    assert messages(report, "probe_skipped") == [
        "probe skipped: the data check's probe needs scikit-learn: pip install 'erlmr[probes]'"
    ]
    assert report["modalities"]["a"]["columns"] == 6 and "probe skipped" in format_check(report)


def test_cli_prints_tables_or_json_and_refuses_bad_arguments(tmp_path, capsys):
    root = write_arrays(tmp_path / "d")
    assert main(["data", "check", "--data", str(root)]) == 0
    text = capsys.readouterr().out
    assert "training normalises inputs: standard (data.normalize=auto)" in text
    assert any(line.split()[:3] == ["b", "(4,", "10)"] for line in text.splitlines())
    assert "warnings (0):" in text
    assert main(["data", "check", "--dataset", "synthetic", "--set", "dim=8", "--set", "train_size=200", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dataset"] == "synthetic" and report["modalities"]["m0"]["shape"] == [8]
    assert report["data_options"] == {"dim": 8, "train_size": 200} and report["normalization"] == "none"
    assert main(["data", "check", "--data", str(root), "--normalize", "zscore"]) == 2
    assert "unknown data.normalize 'zscore'; valid: auto, standard, robust, minmax, none" in capsys.readouterr().err
    assert main(["data", "check", "--data", str(root), "--set", "x=1"]) == 2
    assert "unknown option(s) ['x'] for dataset 'arrays'; valid options: none" in capsys.readouterr().err
    assert main(["data", "check"]) == 2


def test_basicmotions_probe_reads_both_sensors():
    report = check_dataset("basicmotions")
    assert report["warnings"] == [] and report["normalization"] == "none"
    assert report["splits"]["test"]["class_counts"] == [10, 10, 10, 10]
    assert min(report["probe"]["accuracy"]["test"].values()) >= 0.9  # trained alone: acc 1.000, gyro 0.992


def test_avdigits_probe_sees_the_imbalance(built):
    report = check_dataset("avdigits", str(built))
    assert report["warnings"] == [] and report["modalities"]["audio"]["shape"] == [40, 101]
    test = report["probe"]["accuracy"]["test"]
    assert test["visual"] > test["audio"] + 0.15 and test["audio"] > report["chance"]["test"] + 0.05
    assert messages(report, "imbalance")[0].startswith("the probe reads 'visual'")
