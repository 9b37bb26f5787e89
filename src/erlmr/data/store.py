"""From a dataset's raw files to splits, through a memory-mapped cache that is decoded once.

A loader describes its dataset as a :class:`Recipe`: the recordings its file lists name (each with a
label, a split and a group that must not straddle train and test) and a ``decode`` function that reads
one recording's files into one array per modality. :func:`load_recipe` decodes every recording once
into ``<cache_dir>/<name>-<fingerprint>/`` (one ``.npy`` file per modality plus ``index.json``), then
opens the arrays memory-mapped, so an epoch reads rows from disk instead of decoding JPEG or WAV again.
The fingerprint covers every option that changes the decoded arrays; a cache whose file lists no longer
match the dataset's is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import struct
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, cast

import numpy as np
import torch
from tqdm import tqdm

from ..errors import ConfigError, DataError
from .augment import BatchAugment
from .base import DatasetSplits, Split, stratified_split

FORMAT_VERSION = 1
CACHE_FOLDER = ".erlmr-cache"
SPLITS = ("train", "val", "test")
SKIP_HINT = "pass skip_bad=true (--set data.options.skip_bad=true) to skip bad samples and report how many"


@dataclass(frozen=True)
class Record:
    """One recording named by a dataset's file lists."""

    key: str  # unique name, e.g. the clip name
    label: int
    split: str  # "train", "val" or "test"
    group: str  # the unit that must not be in both train and test: the clip, or the subject
    source: str  # where its files are, for messages


@dataclass
class Recipe:
    """How to turn one dataset's raw folder into arrays.

    ``decode(record)`` returns, per modality, an array shaped ``(k, *sample_shape)`` (``k`` >= 1 samples
    from the recording, e.g. windows) and raises :class:`DataError` naming a missing or unreadable file.
    ``settings`` holds every option that changes the decoded arrays. ``standardize`` maps a modality to
    the channel axis of its samples; each channel is then standardised with train statistics.
    ``sources`` names, per split, the file or folder that lists it (for the empty-split message).
    ``val_by_group`` carves a missing validation split from whole groups of train (e.g. UCF101's clips
    of one video group) instead of from single records. ``workers`` processes decode the records (None:
    one per usable core); it does not change the arrays. ``augment`` is the training-time augmentation
    the splits declare (:mod:`erlmr.data.augment`); it is applied per batch, never stored.
    """

    name: str
    modalities: list[str]
    classes: list[str]
    records: list[Record]
    decode: Callable[[Record], dict[str, np.ndarray]]
    settings: dict[str, Any]
    sources: dict[str, str]
    default_encoders: dict[str, str] = field(default_factory=dict)
    standardize: dict[str, int] = field(default_factory=dict)
    val_by_group: bool = False
    workers: int | None = None
    augment: BatchAugment | None = None

    def fingerprint(self) -> str:
        described = {
            "format": FORMAT_VERSION,
            "name": self.name,
            "modalities": self.modalities,
            "settings": self.settings,
            "standardize": self.standardize,
        }
        return hashlib.sha1(json.dumps(described, sort_keys=True).encode()).hexdigest()[:12]

    def listing(self) -> list[list]:
        return [[r.key, r.label, r.split, r.group] for r in self.records]


@dataclass
class RecordedSplits(DatasetSplits):
    """Dataset splits that also know, per sample, the recording and the group it comes from."""

    keys: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    cache: Path | None = None


@dataclass
class Decoded:
    """Every modality's rows, which record each row comes from, and the records skipped as bad."""

    arrays: dict[str, np.ndarray]
    row_record: np.ndarray
    skipped: list[str]
    folder: Path | None = None


def dataset_root(root: str | os.PathLike | None, name: str) -> Path:
    if root is None:
        raise DataError(f"dataset {name!r} needs its folder: pass --data PATH (data.root in a config)")
    folder = Path(root).expanduser()
    if not folder.exists():
        raise DataError(f"missing folder {folder} (the {name} dataset root)")
    return folder


def require_positive(dataset: str, **options: Any) -> None:
    """Integer options (frames, image size, window, ...) must be positive integers."""
    for name, value in options.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{dataset} option {name} must be a positive integer, got {value!r}")


# ------------------------------------------------------------------------------------------ writing


class NpyWriter:
    """Appends rows to a ``.npy`` file and writes its header last, so the row count need not be known."""

    HEADER_BYTES = 256

    def __init__(self, path: Path):
        self.path = path
        self.file = path.open("wb")
        self.file.write(b"\0" * self.HEADER_BYTES)
        self.rows = 0
        self.dtype: np.dtype | None = None
        self.sample_shape: tuple[int, ...] | None = None

    def append(self, array: np.ndarray) -> None:
        if self.dtype is None:
            self.dtype, self.sample_shape = array.dtype, array.shape[1:]
        self.file.write(np.ascontiguousarray(array, dtype=self.dtype).tobytes())
        self.rows += len(array)

    def close(self) -> np.ndarray:
        header = repr(
            {
                "descr": np.lib.format.dtype_to_descr(self.dtype),
                "fortran_order": False,
                "shape": (self.rows, *self.sample_shape),  # type: ignore[misc]  # set by the first append
            }
        )
        room = self.HEADER_BYTES - len(np.lib.format.magic(1, 0)) - 2
        self.file.seek(0)
        self.file.write(np.lib.format.magic(1, 0) + struct.pack("<H", room) + header.ljust(room - 1).encode() + b"\n")
        self.file.close()
        return np.load(self.path, mmap_mode="r+")


class MemoryWriter:
    """The same interface as :class:`NpyWriter`, for decoding without a cache."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []

    def append(self, array: np.ndarray) -> None:
        self.parts.append(array)

    def close(self) -> np.ndarray:
        return np.concatenate(self.parts)


def check_agreement(record: Record, arrays: dict[str, np.ndarray], shapes: dict[str, tuple]) -> None:
    """One recording's modalities must give the same number of samples, shaped like every other's."""
    counts = {m: len(a) for m, a in arrays.items()}
    if len(set(counts.values())) != 1:
        raise DataError(f"{record.source}: the modalities disagree on the number of samples {counts}")
    if not next(iter(counts.values())):
        raise DataError(f"{record.source}: the recording yields no samples")
    for m, array in arrays.items():
        if m in shapes and array.shape[1:] != shapes[m]:
            raise DataError(
                f"{record.source}: modality {m!r} decodes to samples of shape {array.shape[1:]}, "
                f"the other recordings to {shapes[m]}"
            )


# The recipe the pool's processes decode: set before they fork, so that they inherit it (a recipe's
# decode function is a closure, which cannot be pickled to a spawned process).
_POOL_RECIPE: Recipe | None = None


def decode_record(index: int) -> dict[str, np.ndarray] | str:
    """Record ``index`` of the pool's recipe decoded, or the message of the DataError that stopped it."""
    try:
        return _POOL_RECIPE.decode(_POOL_RECIPE.records[index])
    except DataError as error:
        return str(error)


def start_worker() -> None:
    torch.set_num_threads(1)  # one process per core; torch.stft would otherwise start a thread per core too


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def decoded_records(recipe: Recipe, workers: int | None) -> Iterator[dict[str, np.ndarray] | str]:
    """Every record of ``recipe`` decoded in order, by ``workers`` processes (None: one per usable core;
    one process, or a platform without fork, decodes in this process)."""
    global _POOL_RECIPE
    workers = min(usable_cores() if workers is None else workers, len(recipe.records))
    _POOL_RECIPE = recipe
    try:
        if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
            yield from map(decode_record, range(len(recipe.records)))
            return
        with multiprocessing.get_context("fork").Pool(workers, initializer=start_worker) as pool:
            yield from pool.imap(decode_record, range(len(recipe.records)), chunksize=2)
    finally:
        _POOL_RECIPE = None


def decode_all(recipe: Recipe, writers: dict[str, Any], skip_bad: bool) -> tuple[list[int], list[str]]:
    """Decode every record into ``writers``; returns the record index of every row and the skipped."""
    row_record: list[int] = []
    skipped: list[str] = []
    shapes: dict[str, tuple] = {}
    outcomes = decoded_records(recipe, recipe.workers)
    bar = tqdm(outcomes, total=len(recipe.records), desc=f"decoding {recipe.name}", unit="rec", disable=None)
    for index, (arrays, record) in enumerate(zip(bar, recipe.records)):
        try:
            if isinstance(arrays, str):
                raise DataError(arrays)
            check_agreement(record, arrays, shapes)
        except DataError as error:
            if not skip_bad:
                raise DataError(f"{error}; {SKIP_HINT}") from None
            skipped.append(str(error))
            continue
        for m in recipe.modalities:
            shapes.setdefault(m, arrays[m].shape[1:])
            writers[m].append(arrays[m])
        row_record += [index] * len(arrays[recipe.modalities[0]])
    if not row_record:
        first = f"; the first: {skipped[0]}" if skipped else ""
        raise DataError(f"no recording of {recipe.name} could be decoded{first}")
    return row_record, skipped


def standardize_channels(array: np.ndarray, train_rows: np.ndarray, axis: int, chunk: int = 4096) -> dict:
    """Standardise each channel (sample axis ``axis``) in place with the mean and std of ``train_rows``."""
    moved = 1 + axis
    total = np.zeros(array.shape[moved])
    squares = np.zeros(array.shape[moved])
    count = 0
    other = tuple(a for a in range(array.ndim) if a != moved)
    for start in range(0, len(train_rows), chunk):
        block = array[train_rows[start : start + chunk]].astype(np.float64)
        total += block.sum(axis=other)
        squares += (block**2).sum(axis=other)
        count += block.size // array.shape[moved]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0)) + 1e-6
    shape = [1] * array.ndim
    shape[moved] = -1
    for start in range(0, len(array), chunk):
        block = array[start : start + chunk]
        array[start : start + chunk] = (block - mean.reshape(shape)) / std.reshape(shape)
    return {"mean": mean.tolist(), "std": std.tolist()}


def finish(recipe: Recipe, writers: dict[str, Any], row_record: list[int]) -> tuple[dict[str, np.ndarray], dict]:
    rows = np.asarray(row_record)
    train = np.flatnonzero(np.isin(rows, [i for i, r in enumerate(recipe.records) if r.split == "train"]))
    if not len(train):  # checked before the writers close: with no sample at all they have no shape to write
        raise DataError(f"{recipe.name}: no training sample could be decoded from {recipe.sources['train']}")
    arrays = {m: writers[m].close() for m in recipe.modalities}
    stats = {m: standardize_channels(arrays[m], train, axis) for m, axis in recipe.standardize.items()}
    return arrays, stats


def decode_in_memory(recipe: Recipe, skip_bad: bool) -> Decoded:
    writers = {m: MemoryWriter() for m in recipe.modalities}
    row_record, skipped = decode_all(recipe, writers, skip_bad)
    arrays, _ = finish(recipe, writers, row_record)
    return Decoded(arrays, np.asarray(row_record), skipped)


def build_cache(folder: Path, recipe: Recipe, skip_bad: bool) -> None:
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    except OSError as error:
        raise DataError(
            f"cannot write the cache folder {folder.parent}: {error.strerror}; "
            "pass cache_dir=PATH to put it elsewhere, or cache=false to decode into memory"
        ) from None
    try:
        writers = {m: NpyWriter(partial / f"{m}.npy") for m in recipe.modalities}
        row_record, skipped = decode_all(recipe, writers, skip_bad)
        arrays, stats = finish(recipe, writers, row_record)
        for array in arrays.values():
            cast(np.memmap, array).flush()  # NpyWriter.close returns memory maps
        del arrays
        np.save(partial / "row_record.npy", np.asarray(row_record, dtype=np.int64))
        index = {
            "format": FORMAT_VERSION,
            "dataset": recipe.name,
            "settings": recipe.settings,
            "modalities": recipe.modalities,
            "classes": recipe.classes,
            "standardization": stats,
            "skipped": skipped,
            "records": recipe.listing(),
        }
        (partial / "index.json").write_text(json.dumps(index))
        if folder.exists():  # another process finished the same cache first
            shutil.rmtree(partial)
        else:
            os.replace(partial, folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def open_cache(folder: Path, recipe: Recipe) -> Decoded | None:
    """The cached arrays, memory-mapped; None when there is no cache or its file lists are out of date."""
    index_path = folder / "index.json"
    if not index_path.exists():
        return None
    try:
        index = json.loads(index_path.read_text())
        if index["records"] != recipe.listing():
            warnings.warn(f"the {recipe.name} file lists changed since {folder} was built; rebuilding it", stacklevel=3)
            shutil.rmtree(folder)
            return None
        # Copy-on-write maps: the tensors are writable for torch, the file is never modified.
        arrays = {m: np.load(folder / f"{m}.npy", mmap_mode="c") for m in recipe.modalities}
        row_record = np.load(folder / "row_record.npy")
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"the cache {folder} is damaged ({error}); delete the folder to rebuild it") from None
    return Decoded(arrays, row_record, index["skipped"], folder)


def materialize(recipe: Recipe, root: Path, cache: bool, cache_dir: str | None, skip_bad: bool) -> Decoded:
    """The decoded arrays: from the cache (built first if absent), or decoded into memory without one."""
    if not cache:
        return decode_in_memory(recipe, skip_bad)
    base = Path(cache_dir).expanduser() if cache_dir else (root if root.is_dir() else root.parent) / CACHE_FOLDER
    folder = base / f"{recipe.name}-{recipe.fingerprint()}"
    decoded = open_cache(folder, recipe)
    if decoded is None:
        build_cache(folder, recipe, skip_bad)
        decoded = open_cache(folder, recipe)
        assert decoded is not None, f"the cache {folder} just built does not open"
    if decoded.skipped and not skip_bad:
        raise DataError(
            f"the cache {folder} was built without {len(decoded.skipped)} bad sample(s), the first: "
            f"{decoded.skipped[0]}; fix the file(s) and delete the cache folder, or {SKIP_HINT}"
        )
    return decoded


# ------------------------------------------------------------------------------------------- splits


def check_records(recipe: Recipe) -> None:
    """Every recording listed once, at least one per listed split, and no group in both train and test."""
    splits: dict[str, str] = {}
    for r in recipe.records:
        if r.key in splits:
            raise DataError(f"{recipe.name}: {r.source} is listed twice (in {splits[r.key]} and {r.split})")
        splits[r.key] = r.split
    for name in ("train", "test"):
        if name not in splits.values():
            raise DataError(f"{recipe.name}: the {name} split is empty; {recipe.sources[name]} lists no recording")
    training = {r.group for r in recipe.records if r.split != "test"}
    shared = sorted({r.group for r in recipe.records if r.split == "test"} & training)
    if shared:
        raise DataError(
            f"{recipe.name}: {shared[0]!r} (and {len(shared) - 1} more) is in both the test split "
            f"({recipe.sources['test']}) and the training data ({recipe.sources['train']}); a protocol "
            "must keep them apart"
        )


def held_out_groups(groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A mask over ``groups`` that holds out about ``fraction`` of the distinct groups, seeded."""
    names = np.unique(groups)
    count = int(round(fraction * len(names)))
    if fraction > 0 and len(names) > 1:
        count = max(count, 1)
    return np.isin(groups, np.random.default_rng(seed).permutation(names)[:count])


def records_by_split(recipe: Recipe, present: Iterable[int], seed: int, val_fraction: float) -> dict[str, np.ndarray]:
    """Record indices per split; without listed validation records, a seeded part of train (stratified
    by class, or whole groups with ``val_by_group``)."""
    present = np.asarray(sorted(present))
    split_of = np.array([recipe.records[i].split for i in present])
    chosen = {name: present[split_of == name] for name in SPLITS}
    train = chosen["train"]
    if not len(chosen["val"]) and len(train):
        if recipe.val_by_group:
            held = held_out_groups(np.array([recipe.records[i].group for i in train]), val_fraction, seed)
        else:
            held = np.zeros(len(train), dtype=bool)
            held[stratified_split(np.array([recipe.records[i].label for i in train]), val_fraction, seed)[1]] = True
        chosen["train"], chosen["val"] = train[~held], train[held]
    for name in SPLITS:
        if not len(chosen[name]):
            where = recipe.sources.get(name) or f"{recipe.sources['train']} (val_fraction={val_fraction})"
            raise DataError(f"{recipe.name}: the {name} split is empty; check {where}")
    return chosen


def load_recipe(
    recipe: Recipe,
    root: Path,
    seed: int,
    val_fraction: float,
    cache: bool = True,
    cache_dir: str | None = None,
    skip_bad: bool = False,
) -> RecordedSplits:
    """Decode (or open the cache of) ``recipe`` and split it into train, val and test."""
    check_records(recipe)
    decoded = materialize(recipe, root, cache, cache_dir, skip_bad)
    if decoded.skipped:
        warnings.warn(
            f"{recipe.name}: skipped {len(decoded.skipped)} bad sample(s); the first: {decoded.skipped[0]}",
            stacklevel=2,
        )
    chosen = records_by_split(recipe, set(decoded.row_record.tolist()), seed, val_fraction)
    tensors = {m: torch.from_numpy(decoded.arrays[m]) for m in recipe.modalities}
    record_labels = torch.tensor([r.label for r in recipe.records], dtype=torch.long)
    splits, keys, groups = {}, {}, {}
    for name in SPLITS:
        rows = np.flatnonzero(np.isin(decoded.row_record, chosen[name]))
        owners = decoded.row_record[rows]
        splits[name] = Split(tensors, record_labels[owners], torch.from_numpy(rows))
        keys[name] = [recipe.records[i].key for i in owners]
        groups[name] = [recipe.records[i].group for i in owners]
    return RecordedSplits(
        recipe.name,
        recipe.modalities,
        recipe.classes,
        splits["train"],
        splits["val"],
        splits["test"],
        dict(recipe.default_encoders),
        augment=recipe.augment,
        keys=keys,
        groups=groups,
        skipped=decoded.skipped,
        cache=decoded.folder,
    )
