"""Every guard gets its bad input and must answer with one message naming the problem."""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import erlmr
from erlmr.data import DatasetSplits, Split
from erlmr.data.checks import check_splits
from erlmr.errors import CheckpointError, ConfigError, DataError, TrainingDivergedError
from erlmr.training import checkpoint as checkpoint_module
from erlmr.training.checkpoint import load_checkpoint

from .conftest import small_config


def write_folder(root: Path, n_train: int = 40, n_test: int = 20, **changes) -> Path:
    """A valid two-modality array folder, with ``changes`` = {"train.npz": {"label": array}} applied."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.npz", n_train), ("test.npz", n_test)):
        arrays = {
            "a": rng.standard_normal((n, 6)).astype(np.float32),
            "b": rng.standard_normal((n, 2, 8)),
            "label": np.arange(n) % 3,
        }
        arrays.update(changes.get(name, {}))
        np.savez(root / name, **arrays)
    return root


def arrays_config(root: Path, run_dir: Path, **train) -> dict:
    return {
        "data": {"dataset": "arrays", "root": str(root)},
        "method": {"name": "joint"},
        "train": {"epochs": 1, "batch_size": 8, "device": "cpu", "quiet": True, "run_dir": str(run_dir), **train},
    }


def test_nan_in_inputs_names_the_file_array_and_sample(tmp_path):
    a = np.ones((40, 6), np.float32)
    a[[7, 30], 2] = np.nan
    root = write_folder(tmp_path / "data", **{"train.npz": {"a": a}})
    with pytest.raises(
        DataError, match=r"train\.npz: array 'a' has NaN or Inf in 2 sample\(s\), first at index 7, feature 2; clean"
    ):
        erlmr.train(arrays_config(root, tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # refused before a run folder is made


def test_values_beyond_float32_range_count_as_inf(tmp_path):
    b = np.zeros((20, 2, 8))
    b[4, 0, 0] = 1e300
    root = write_folder(tmp_path / "data", **{"test.npz": {"b": b}})
    with pytest.raises(DataError, match=r"test\.npz: array 'b' .* first at index 4"):
        erlmr.train(arrays_config(root, tmp_path / "run"))


def test_labels_out_of_range(tmp_path):
    labels = np.arange(40) % 3
    labels[11] = -1
    root = write_folder(tmp_path / "data", **{"train.npz": {"label": labels}})
    with pytest.raises(DataError, match=r"label -1 at index 11 is out of range; labels must be in 0\.\.2"):
        erlmr.train(arrays_config(root, tmp_path / "run"))


def test_a_negative_label_without_a_class_count_is_a_data_error(tmp_path):
    from erlmr.data.arrays import check_labels

    with pytest.raises(DataError, match=r"label -2 at index 1 is out of range; labels must be 0 or more"):
        check_labels(tmp_path / "train.npz", np.array([0, -2, 1]), None)


def test_modalities_with_different_sample_counts(tmp_path):
    root = write_folder(tmp_path / "data", **{"train.npz": {"b": np.zeros((39, 2, 8))}})
    with pytest.raises(DataError, match=r"modality sample counts \{'a': 40, 'b': 39\} differ from the 40 labels"):
        erlmr.train(arrays_config(root, tmp_path / "run"))


def test_empty_split(tmp_path):
    root = write_folder(tmp_path / "data")
    config = arrays_config(root, tmp_path / "run")
    config["data"]["val_fraction"] = 0.0  # no val.npz and nothing held out: the val split is empty
    with pytest.raises(DataError, match=r"val split: the split is empty"):
        erlmr.train(config)


def test_batch_size_larger_than_the_train_split(tmp_path):
    root = write_folder(tmp_path / "data")
    with pytest.raises(ConfigError, match=r"train\.batch_size 64 is larger than the train split \(37 samples\)"):
        erlmr.train(arrays_config(root, tmp_path / "run", batch_size=64))


def in_memory_splits(**overrides) -> DatasetSplits:
    x = {"a": torch.zeros(10, 3), "b": torch.zeros(10, 2, 4)}
    parts = {name: Split(dict(x), torch.arange(10) % 2) for name in ("train", "val", "test")}
    parts.update(overrides)
    return DatasetSplits("mem", ["a", "b"], ["no", "yes"], **parts)


@pytest.mark.parametrize(
    "split, message",
    [
        (
            Split({"a": torch.full((10, 3), math.inf), "b": torch.zeros(10, 2, 4)}, torch.zeros(10)),
            r"dataset 'mem', val split: modality 'a' has NaN or Inf in 10 sample\(s\), first at index 0, feature 0; "
            r"no value of it is finite",
        ),
        (
            Split({"a": torch.zeros(10, 3), "b": torch.zeros(10, 2, 4)}, torch.arange(10)),
            r"val split: label 2 at index 2 is out of range; labels must be in 0\.\.1",
        ),
        (
            Split({"a": torch.zeros(10, 3, dtype=torch.int64), "b": torch.zeros(10, 2, 4)}, torch.zeros(10)),
            r"val split: modality 'a' holds torch\.int64",
        ),
        (
            Split({"a": torch.zeros(10, 4), "b": torch.zeros(10, 2, 4)}, torch.zeros(10)),
            r"modality 'a' has different sample shapes across splits: "
            r"\{'train': \(3,\), 'val': \(4,\), 'test': \(3,\)\}",
        ),
        (Split({"a": torch.zeros(0, 3), "b": torch.zeros(0, 2, 4)}, torch.zeros(0)), r"val split: the split is empty"),
    ],
)
def test_every_registered_dataset_is_checked_at_load_time(split, message):
    check_splits("mem", in_memory_splits())
    with pytest.raises(DataError, match=message):
        check_splits("mem", in_memory_splits(val=split))


def test_split_refuses_modalities_with_different_sample_counts():
    with pytest.raises(DataError, match=r"different sample counts \{'a': 10, 'b': 9\} but there are 10 labels"):
        Split({"a": torch.zeros(10, 3), "b": torch.zeros(9, 3)}, torch.zeros(10))


@pytest.mark.parametrize(
    "section, values, message",
    [
        ("optim", {"lr": -0.1}, r"optim\.lr must be > 0, got -0\.1"),
        ("optim", {"lr": float("nan")}, r"optim\.lr is NaN; give a number"),
        ("method", {"options": {"mmc_weight": float("nan")}}, r"method\.options of 'erlmr'\.mmc_weight is NaN"),
        ("model", {"euler_dropout": 1.0}, r"model\.euler_dropout must be in \[0, 1\), got 1\.0"),
        (
            "model",
            {"encoder_options": {"m0": {"dropout": 1.5}}},
            r"encoder 'mlp': dropout must be in \[0, 1\), got 1\.5",
        ),
        (
            "method",
            {"options": {"phase_weight": -1.0}},
            r"method\.options of 'erlmr': option phase_weight must be >= 0, got -1\.0",
        ),
        ("method", {"options": {"weight_floor": 0.5}}, r"option weight_floor must be >= 0 and < 0\.5, got 0\.5"),
        ("method", {"options": {"pareto_mode": "grads"}}, r"option pareto_mode is 'grads'; valid: params, features"),
        ("train", {"epochs": 0}, r"train\.epochs must be >= 1, got 0"),
    ],
)
def test_config_values_out_of_range(tmp_path, section, values, message):
    with pytest.raises(ConfigError, match=message):
        erlmr.train(small_config(tmp_path / "run", **{section: values}))
    assert not (tmp_path / "run").exists()


def test_composed_method_options_are_range_checked_per_part():
    from erlmr.config import from_dict
    from erlmr.methods.erlmr import ERLMROptions

    assert from_dict(ERLMROptions, {"mmc_weight": 0.0}).mmc_weight == 0.0
    with pytest.raises(ConfigError, match=r"method\.options of 'erlmr': option mmc_weight must be >= 0"):
        from_dict(ERLMROptions, {"mmc_weight": -2}, where="method.options of 'erlmr'")


def poison_weight(model) -> None:
    with torch.no_grad():
        model.head.linear.weight.fill_(math.nan)


def poison_gradient(model) -> None:
    next(p for p in model.parameters() if p.grad is not None).grad[0] = math.inf


@pytest.mark.parametrize("poison, step", [(poison_weight, 13 + 4), (poison_gradient, 13 + 5)])
def test_nan_loss_or_inf_gradient_stops_with_the_last_good_checkpoint_kept(tmp_path, at_step, poison, step):
    at_step(step, poison)  # 13 steps per epoch: a NaN weight in step 4 of epoch 2 makes step 5's loss NaN
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=r"diverged at epoch 2, step 5: the loss or a gradient is NaN/Inf"):
        erlmr.train(small_config(run_dir))
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1] == {"epoch": 1, "step": 4, "error": "non-finite loss or gradient"}
    last = load_checkpoint(run_dir / "last.pt")
    assert last["epoch"] == 0 and all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert not (run_dir / "summary.json").exists()


def test_weights_that_became_inf_are_never_saved(tmp_path, at_step):
    def poison(model):
        with torch.no_grad():
            model.head.linear.bias.fill_(math.inf)

    at_step(13 + 13, poison)  # the last step of epoch 2, after its loss was computed
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=r"in epoch 2: a weight became NaN/Inf"):
        erlmr.train(small_config(run_dir, method={"name": "joint"}))
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 0
    assert json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1]) == {
        "epoch": 1,
        "error": "non-finite parameters",
    }


def test_full_disk_is_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr("erlmr.training.runstate.shutil.disk_usage", lambda path: type("Usage", (), {"free": 10_000})())
    with pytest.raises(ConfigError, match=r"has 0\.0 MiB free, but this run needs about .* MiB for its checkpoints"):
        erlmr.train(small_config(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_read_only_run_folder_is_refused_before_training(tmp_path, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "write_text", read_only)
    with pytest.raises(ConfigError, match=r"cannot write the run folder .*run: Read-only file system"):
        erlmr.train(small_config(tmp_path / "run"))
    assert list((tmp_path / "run").iterdir()) == []


def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    real_save = torch.save
    calls = {"n": 0}

    def save_then_fail(state, file):
        calls["n"] += 1
        if calls["n"] <= 2:  # epoch 1: best.pt and last.pt
            return real_save(state, file)
        file.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", save_then_fail)
    run_dir = tmp_path / "run"
    with pytest.raises(
        CheckpointError,
        match=rf"could not write {run_dir}/(best|last)\.pt: No space left on device.*"
        rf"erlmr train --resume {run_dir}",
    ):
        erlmr.train(small_config(run_dir))
    monkeypatch.undo()
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 0
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.pt", "config.yaml", "last.pt", "metrics.jsonl"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_folder_for_real(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match=r"cannot write the run folder .*: Permission denied"):
            erlmr.train(small_config(out / "run"))
    finally:
        out.chmod(0o700)


def test_run_files_honour_the_umask(tmp_path):
    """Atomic writes go through mkstemp (mode 0600); the files they leave must read like ordinary ones."""
    previous = os.umask(0o022)
    try:
        run_dir = erlmr.train(small_config(tmp_path / "run", method={"name": "joint"}, train={"epochs": 1})).run_dir
        os.umask(0o007)
        checkpoint_module.write_json(run_dir / "group.json", {})
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in run_dir.iterdir() if p.is_file()}
    assert modes.pop("group.json") == 0o660
    run_files = ["best.pt", "config.yaml", "feature_maps.npz", "last.pt", "metrics.jsonl", "summary.json"]
    assert modes == dict.fromkeys(run_files, 0o644)
