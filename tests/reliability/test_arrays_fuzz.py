"""Fuzz the array-folder loader with malformed folders: it either refuses them with a DataError or
ConfigError, or returns splits that are safe to train on; never another exception."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from support import model_for

from erlmr.config import ModelConfig
from erlmr.data import load_dataset
from erlmr.errors import ConfigError, DataError

DTYPES = ["float32", "float64", "float16", "int64", "int8", "uint8", "bool", "complex64", "<U2", "M8[s]"]
FILES = ["train.npz", "test.npz", "val.npz"]
MUTATIONS = ["dtype", "rank", "nonfinite", "huge", "rows", "empty", "drop", "label_range", "label_dtype",
             "zero_width", "feature_shape"]
METAS = [{"modalities": ["a", "b"]}, {"classes": ["x", "y", "z"]}, {"classes": ["x"]}, {"modalities": "ab"},
         {"modalities": ["a", "a"]}, {"modalities": ["a", "label"]}, {"modalities": ["a", "z"]}, [1, 2], "not json"]


@st.composite
def valid_split(draw, rows: int, shapes: dict) -> dict[str, np.ndarray]:
    arrays = {m: draw(hnp.arrays(np.float32, (rows, *shape), elements=st.floats(-9, 9, width=32)))
              for m, shape in shapes.items()}
    arrays["label"] = np.arange(rows) % 3
    return arrays


@st.composite
def mutate(draw, files: dict) -> None:
    """Break one array of one file in one way."""
    name = draw(st.sampled_from(sorted(files)))
    key = draw(st.sampled_from(sorted(files[name])))
    array = files[name][key]
    kind = draw(st.sampled_from(MUTATIONS))
    row = draw(st.integers(0, max(len(array) - 1, 0)))
    if kind == "dtype":
        dtype = draw(st.sampled_from(DTYPES))
        array = draw(hnp.arrays(dtype, array.shape)) if dtype in ("<U2", "M8[s]") else array.astype(dtype)
    elif kind == "rank":
        array = array.reshape(-1) if draw(st.booleans()) else array[..., None, None]
    elif kind in ("nonfinite", "huge") and array.size and array.ndim > 1:
        array = array.astype(np.float64)
        array.reshape(len(array), -1)[row, 0] = 1e300 if kind == "huge" else draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    elif kind == "rows":
        array = array[: draw(st.integers(0, max(len(array) - 1, 0)))]
    elif kind == "empty":
        files[name] = {k: v[:0] for k, v in files[name].items()}
        return
    elif kind == "drop":
        del files[name][key]
        return
    elif kind.startswith("label") and "label" not in files[name]:
        return
    elif kind == "label_range":
        array = files[name]["label"].copy()
        if len(array):
            array[row] = draw(st.sampled_from([-1, 3, 2**40]))
        key = "label"
    elif kind == "label_dtype":
        array, key = files[name]["label"].astype(draw(st.sampled_from(["float32", "bool", "int8", "uint64"]))), "label"
    elif kind == "zero_width" and array.ndim > 1:
        array = array[:, :0]
    elif kind == "feature_shape" and array.ndim > 1:
        array = np.concatenate([array, array[:, :1]], axis=1)
    files[name][key] = array


@st.composite
def folders(draw):
    shapes = {m: tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))) for m in ("a", "b")}
    files = {"train.npz": draw(valid_split(draw(st.integers(1, 12)), shapes)),
             "test.npz": draw(valid_split(draw(st.integers(1, 6)), shapes))}
    if draw(st.booleans()):
        files["val.npz"] = draw(valid_split(draw(st.integers(1, 6)), shapes))
    for _ in range(draw(st.integers(0, 2))):
        draw(mutate(files))
    meta = draw(st.one_of(st.none(), st.sampled_from(METAS)))
    garbage = draw(st.sampled_from([None] * 8 + ["train.npz", "test.npz"]))
    return files, meta, garbage, draw(st.sampled_from([0.0, 0.2, 0.5]))


def write(root: Path, files: dict, meta, garbage) -> None:
    for name, arrays in files.items():
        np.savez(root / name, **arrays)
    if meta is not None:
        (root / "meta.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    if garbage == "train.npz":
        (root / garbage).write_bytes(b"\x93NUMPY not really")
    elif garbage == "test.npz":
        np.save(root / "single.npy", np.zeros((3, 2)))
        (root / "single.npy").replace(root / garbage)  # a lone .npy array under an .npz name


def assert_safe_to_train(splits) -> None:
    assert len(splits.modalities) >= 2 and len(splits.classes) >= 2
    for split in (splits.train, splits.val, splits.test):
        assert len(split) > 0
        assert split.labels.dtype == torch.long and split.labels.dim() == 1
        assert ((split.labels >= 0) & (split.labels < len(splits.classes))).all()
        for m in splits.modalities:
            x = split.inputs[m]
            assert x.dtype == torch.float32 and len(x) == len(split) and torch.isfinite(x).all()
            assert x.shape[1:] == splits.train.inputs[m].shape[1:] and x[0].numel() > 0


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(folders())
def test_array_folder_loader_refuses_or_returns_clean_data(case):
    files, meta, garbage, val_fraction = case
    with tempfile.TemporaryDirectory() as folder:
        write(Path(folder), files, meta, garbage)
        try:
            splits = load_dataset("arrays", folder, 0, val_fraction, {})
        except (DataError, ConfigError) as error:
            assert str(error)
            return
        assert_safe_to_train(splits)
        try:
            model = model_for(ModelConfig(euler_dim=8), splits, False)
        except ConfigError:
            return  # e.g. a sample rank no default encoder takes: refused with a message
        model.eval()
        output = model(splits.train.inputs)
        assert output.logits.shape == (len(splits.train), len(splits.classes))
