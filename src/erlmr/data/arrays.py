"""The array-folder format: anyone's data as ``train.npz``, ``test.npz`` and optional ``val.npz``.

Each ``.npz`` holds one float array per modality (first axis = samples), an integer ``label`` array and,
optionally, an integer ``group`` array (the subject, recording or session of each sample). An optional
``meta.json`` gives ``{"modalities": [...], "classes": [...]}``; without it every array other than
``label`` and ``group`` is a modality and the classes are ``0..K-1``. Without ``val.npz`` a seeded
``val_fraction`` of train becomes the validation split: whole groups when train has ``group``
(:func:`~erlmr.data.base.grouped_split`), else stratified by class. The inputs are raw: ``data.normalize:
auto`` standardises them with train statistics inside the model (:mod:`erlmr.nn.normalize`).
"""

from __future__ import annotations

import json
import math
import tokenize
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .base import DATASETS, DatasetSplits, Split, grouped_split, stratified_split
from .checks import nonfinite_rows, nonfinite_where

LABEL_KEY = "label"
GROUP_KEY = "group"
RESERVED_KEYS = (LABEL_KEY, GROUP_KEY)


def read_meta(root: Path) -> dict:
    path = root / "meta.json"
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as error:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise DataError(f"{path} is not valid JSON ({type(error).__name__}: {error}); fix or delete it") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path} must hold a JSON object with 'modalities' and/or 'classes'")
    for key in ("modalities", "classes"):
        if key in meta and not (isinstance(meta[key], list) and all(isinstance(v, (str, int)) for v in meta[key])):
            raise DataError(f"{path}: {key!r} must be a list of names, got {meta[key]!r}")
    return meta


ZIP_MAGIC, NPY_MAGIC = b"PK\x03\x04", b"\x93NUMPY"


def read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"missing file {path}; an array folder needs train.npz and test.npz (val.npz optional)")
    try:
        with path.open("rb") as file:
            start = file.read(len(NPY_MAGIC))
        if start.startswith(NPY_MAGIC):
            raise ValueError("it holds a single array, not an .npz archive of named arrays")
        if not start.startswith(ZIP_MAGIC):
            raise ValueError(f"it is not an .npz archive (a zip file); it starts with the bytes {start[:4]!r}")
        with np.load(path, allow_pickle=False) as archive:
            check_members(archive.zip)
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, NotImplementedError) as error:
        raise DataError(f"cannot read {path}: {error}; re-create it with numpy.savez") from None


def check_members(archive: zipfile.ZipFile) -> None:
    """Every member is a .npy array whose header claims no more data than the member holds: checked from
    the header alone, before numpy allocates the array (a damaged header can claim terabytes)."""
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            raise ValueError(f"its member {info.filename!r} is not a .npy array")
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            try:
                shape, _, dtype = reader(member)
            except (SyntaxError, tokenize.TokenError) as error:  # numpy lets these through for some headers
                raise ValueError(f"array {info.filename[:-4]!r} has a damaged header ({error})") from None
            if dtype.hasobject:
                raise ValueError(f"array {info.filename[:-4]!r} holds Python objects, which erlmr does not unpickle")
            claimed, held = math.prod(shape) * dtype.itemsize, info.file_size - member.tell()
        if claimed > held:
            raise ValueError(
                f"array {info.filename[:-4]!r} claims shape {shape} of {dtype} ({claimed} bytes) but holds {held} "
                "bytes: the file is damaged"
            )


def check_modality(path: Path, name: str, array: np.ndarray, finite: bool = True) -> torch.Tensor:
    """The array as a float32 tensor; with ``finite``, a NaN or Inf (or a value beyond float32) is refused."""
    if array.dtype.kind not in "fiub":
        raise DataError(f"{path}: array {name!r} has dtype {array.dtype}; modalities must be numeric (float) arrays")
    if array.ndim < 2 or 0 in array.shape[1:]:
        raise DataError(
            f"{path}: array {name!r} has shape {array.shape}; a modality needs a sample axis plus at least one "
            "non-empty feature axis, e.g. (N, D), (N, C, T) or (N, C, H, W)"
        )
    with np.errstate(over="ignore"):  # a value beyond float32's range becomes Inf and is reported below
        values = array.astype(np.float32, copy=False)
    if finite and len(nonfinite_rows(values)):
        raise DataError(
            f"{path}: array {name!r} has NaN or Inf {nonfinite_where(values)}; clean or drop those samples (a value "
            "beyond float32's range counts as Inf)"
        )
    return torch.from_numpy(np.ascontiguousarray(values))


def check_label_array(path: Path, array: np.ndarray) -> None:
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise DataError(f"{path}: 'label' must be a 1-D integer array, got dtype {array.dtype} and shape {array.shape}")


def check_labels(path: Path, array: np.ndarray, num_classes: int | None) -> torch.Tensor:
    check_label_array(path, array)
    if len(array) == 0:
        raise DataError(f"{path}: the split is empty; it needs at least one sample")
    bad = np.flatnonzero((array < 0) | (array >= (num_classes if num_classes is not None else np.inf)))
    if len(bad):
        allowed = "0 or more" if num_classes is None else f"in 0..{num_classes - 1} ({num_classes} classes)"
        raise DataError(f"{path}: label {array[bad[0]]} at index {bad[0]} is out of range; labels must be {allowed}")
    return torch.from_numpy(array.astype(np.int64))


def check_groups(path: Path, arrays: dict[str, np.ndarray]) -> np.ndarray | None:
    """The file's ``group`` array, if it has one: one integer per sample."""
    if GROUP_KEY not in arrays:
        return None
    groups = arrays[GROUP_KEY]
    if groups.ndim != 1 or groups.dtype.kind not in "iu" or len(groups) != len(arrays[LABEL_KEY]):
        raise DataError(
            f"{path}: 'group' must be a 1-D integer array with one group id per sample ({len(arrays[LABEL_KEY])}), "
            f"got dtype {groups.dtype} and shape {groups.shape}"
        )
    return groups.astype(np.int64)


def read_split(
    path: Path, modalities: list[str], num_classes: int | None, finite: bool = True
) -> tuple[Split, np.ndarray | None]:
    """The file's split and its group ids (None without a ``group`` array)."""
    arrays = read_npz(path)
    if LABEL_KEY not in arrays:
        raise DataError(f"{path} has no 'label' array; found {sorted(arrays)}")
    missing = [m for m in modalities if m not in arrays]
    if missing:
        raise DataError(f"{path} lacks modality array(s) {missing}; found {sorted(arrays)}")
    labels = check_labels(path, arrays[LABEL_KEY], num_classes)
    inputs = {m: check_modality(path, m, arrays[m], finite) for m in modalities}  # shapes first: a 0-d array has no len
    counts = {m: len(x) for m, x in inputs.items()}
    if any(n != len(labels) for n in counts.values()):
        raise DataError(f"{path}: modality sample counts {counts} differ from the {len(labels)} labels")
    return Split(inputs, labels), check_groups(path, arrays)


def modalities_of(root: Path, meta: dict) -> list[str]:
    if "modalities" in meta:
        modalities = list(meta["modalities"])
    else:
        modalities = [key for key in read_npz(root / "train.npz") if key not in RESERVED_KEYS]
    if len(modalities) < 2:
        raise DataError(f"{root}: found modalities {modalities}; multi-modal training needs at least two")
    if set(RESERVED_KEYS) & set(modalities) or len(set(modalities)) < len(modalities):
        raise DataError(
            f"{root}: modalities {modalities} must be distinct and must not include {LABEL_KEY!r} or {GROUP_KEY!r}"
        )
    return modalities


def class_names(root: Path, meta: dict) -> list[str]:
    if "classes" in meta:
        return [str(c) for c in meta["classes"]]
    largest, samples = -1, 0
    for path in (root / "train.npz", root / "test.npz"):
        arrays = read_npz(path)
        if LABEL_KEY not in arrays:
            raise DataError(f"{path} has no 'label' array; found {sorted(arrays)}")
        check_label_array(path, arrays[LABEL_KEY])
        if len(arrays[LABEL_KEY]):
            largest, samples = max(largest, int(arrays[LABEL_KEY].max())), samples + len(arrays[LABEL_KEY])
    if largest >= samples:
        raise DataError(
            f"{root}: the largest label, {largest}, implies {largest + 1} classes for {samples} samples; labels must "
            "be 0..K-1 (name the classes in meta.json if some have no samples)"
        )
    return [str(c) for c in range(largest + 1)]


def read_array_folder(root: str | None, seed: int = 0, val_fraction: float = 0.1, finite: bool = True) -> DatasetSplits:
    """The array folder's splits; ``finite=False`` lets NaN and Inf through, for the data check to count."""
    if root is None:
        raise DataError("the 'arrays' dataset needs a folder: pass --data PATH (or data.root in the config)")
    folder = Path(root)
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist")
    meta = read_meta(folder)
    modalities = modalities_of(folder, meta)
    classes = class_names(folder, meta)
    train, train_groups = read_split(folder / "train.npz", modalities, len(classes), finite)
    test, test_groups = read_split(folder / "test.npz", modalities, len(classes), finite)
    groups = {"train": train_groups, "test": test_groups}
    if (folder / "val.npz").exists():
        val, groups["val"] = read_split(folder / "val.npz", modalities, len(classes), finite)
    else:
        if train_groups is None:
            keep, held = stratified_split(train.labels.numpy(), val_fraction, seed)
        else:
            keep, held = grouped_split(train.labels.numpy(), train_groups, val_fraction, seed)
            groups["train"], groups["val"] = train_groups[keep], train_groups[held]
        train, val = train.subset(keep), train.subset(held)
    known = {name: ids for name, ids in groups.items() if ids is not None}
    return DatasetSplits(folder.name, modalities, classes, train, val, test, normalization="standard", groups=known)


@DATASETS.register(
    "arrays", "your own data as an array folder: train.npz, test.npz, optional val.npz, meta.json and group ids"
)
def load_array_folder(root: str | None, seed: int = 0, val_fraction: float = 0.1) -> DatasetSplits:
    return read_array_folder(root, seed, val_fraction)
