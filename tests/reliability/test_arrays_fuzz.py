"""Fuzz the array-folder loader with malformed folders (arrays, .npy headers inside the .npz files, meta.json):
it either refuses them with a DataError or ConfigError, or returns splits that are safe to train on; never
another exception."""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from erlmr.config import ModelConfig
from erlmr.data import load_dataset
from erlmr.errors import ConfigError, DataError
from support import model_for

DTYPES = ["float32", "float64", "float16", "int64", "int8", "uint8", "bool", "complex64", "<U2", "M8[s]"]
FILES = ["train.npz", "test.npz", "val.npz"]
MUTATIONS = [
    "dtype",
    "rank",
    "nonfinite",
    "huge",
    "rows",
    "empty",
    "drop",
    "label_range",
    "label_dtype",
    "zero_width",
    "feature_shape",
]
METAS = [
    {"modalities": ["a", "b"]},
    {"classes": ["x", "y", "z"]},
    {"classes": ["x"]},
    {"modalities": "ab"},
    {"modalities": ["a", "a"]},
    {"modalities": ["a", "label"]},
    {"modalities": ["a", "z"]},
    [1, 2],
    "not json",
]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**40) | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
#: meta.json contents: the hand-picked cases, and generated ones, most of them with the keys it reads
GENERATED_METAS = JSON | st.fixed_dictionaries(
    {},
    optional={
        "modalities": st.lists(st.sampled_from(["a", "b", "label", "z", 1]), max_size=3) | JSON,
        "classes": st.lists(st.text(max_size=3) | st.integers(-1, 5), max_size=4) | JSON,
    },
)
DESCRS = ["<f4", "<f8", ">f4", "<i8", "|b1", "|O", "<U5", "|V8", "<c8", "<M8[s]", "bogus"]
#: how a .npy member's header is damaged: what it claims, or its bytes
HEADER_DAMAGE = st.one_of(
    st.tuples(st.just("shape"), st.lists(st.integers(0, 12) | st.integers(-2, 10**13), max_size=4).map(tuple)),
    st.tuples(st.just("descr"), st.sampled_from(DESCRS)),
    st.tuples(st.just("fortran_order"), st.booleans()),
    st.tuples(st.just("text"), st.binary(max_size=40)),
    st.tuples(st.just("cut"), st.integers(0, 200)),
)


@st.composite
def valid_split(draw, rows: int, shapes: dict) -> dict[str, np.ndarray]:
    arrays = {
        m: draw(hnp.arrays(np.float32, (rows, *shape), elements=st.floats(-9, 9, width=32)))
        for m, shape in shapes.items()
    }
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
        array.reshape(len(array), -1)[row, 0] = (
            1e300 if kind == "huge" else draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        )
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
    files = {
        "train.npz": draw(valid_split(draw(st.integers(1, 12)), shapes)),
        "test.npz": draw(valid_split(draw(st.integers(1, 6)), shapes)),
    }
    if draw(st.booleans()):
        files["val.npz"] = draw(valid_split(draw(st.integers(1, 6)), shapes))
    for _ in range(draw(st.integers(0, 2))):
        draw(mutate(files))
    meta = draw(st.one_of(st.none(), st.sampled_from(METAS), GENERATED_METAS))
    garbage = draw(st.sampled_from([None] * 8 + ["train.npz", "test.npz"]))
    damage = None
    if draw(st.integers(0, 3)) == 0:
        name = draw(st.sampled_from(sorted(files)))
        damage = (name, draw(st.sampled_from(sorted(files[name]) or ["label"])), *draw(HEADER_DAMAGE))
    return files, meta, garbage, damage, draw(st.sampled_from([0.0, 0.2, 0.5]))


def damage_header(path: Path, key: str, kind: str, value) -> None:
    """Rewrite the header of member ``key`` of the .npz at ``path``: one field changed, its bytes replaced, or
    the member cut to ``value`` bytes."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    raw = members.get(f"{key}.npy")
    if raw is None:
        return
    stream = io.BytesIO(raw)
    np.lib.format.read_magic(stream)
    shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
    fields = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran_order, "shape": shape}
    if kind == "cut":
        members[f"{key}.npy"] = raw[:value]
    else:
        header = value if kind == "text" else repr({**fields, kind: value}).encode()
        length = (len(header) + 1).to_bytes(2, "little")
        members[f"{key}.npy"] = np.lib.format.magic(1, 0) + length + header + b"\n" + raw[stream.tell() :]
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def write(root: Path, files: dict, meta, garbage, damage) -> None:
    for name, arrays in files.items():
        np.savez(root / name, **arrays)
    if damage is not None:
        damage_header(root / damage[0], *damage[1:])
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
    files, meta, garbage, damage, val_fraction = case
    with tempfile.TemporaryDirectory() as folder:
        write(Path(folder), files, meta, garbage, damage)
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
