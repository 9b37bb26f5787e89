"""In-memory multi-modal splits and the dataset registry.

A dataset loader is a function registered in :data:`DATASETS`::

    @DATASETS.register("name", "one-line description")
    def load(root: str | None, seed: int, val_fraction: float, **options) -> DatasetSplits: ...

Its keyword options become the ``data.options`` of a config; an unknown option is an error that lists
the loader's keyword arguments.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..registry import Registry
from .augment import BatchAugment
from .checks import check_splits

DatasetLoader = Callable[..., "DatasetSplits"]
DATASETS: Registry[DatasetLoader] = Registry("dataset")


@dataclass
class Split:
    """One split: a float tensor per modality (first axis = samples) and integer labels.

    ``rows``, when given, says which rows of the tensors belong to the split: sample ``i`` is row
    ``rows[i]``. Several splits can then share one large store (e.g. a memory-mapped cache) without
    copying it, and :meth:`subset` of such a split stays a view. Batches are gathered per call and
    converted to float32, so a store may hold a compact float16 copy.
    """

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    rows: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.labels = torch.as_tensor(self.labels, dtype=torch.long)
        counts = {name: len(x) for name, x in self.inputs.items()}
        if self.rows is None:
            if any(n != len(self.labels) for n in counts.values()):
                raise DataError(
                    f"modalities have different sample counts {counts} but there are {len(self.labels)} labels; "
                    "every modality array needs one row per label"
                )
            return
        self.rows = torch.as_tensor(self.rows, dtype=torch.long)
        if len(self.rows) != len(self.labels):
            raise DataError(f"a split with {len(self.labels)} labels needs as many rows, got {len(self.rows)}")
        if len(self.rows) and (int(self.rows.min()) < 0 or int(self.rows.max()) >= min(counts.values())):
            raise DataError(f"split rows must lie in 0..{min(counts.values()) - 1} (modality sample counts {counts})")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: Sequence[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        rows = index if self.rows is None else self.rows[index]
        return {name: x[rows].float() for name, x in self.inputs.items()}, self.labels[index]

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        row = i if self.rows is None else int(self.rows[i])
        return {name: x[row].float() for name, x in self.inputs.items()}, self.labels[i]

    def subset(self, indices: Sequence[int] | torch.Tensor) -> "Split":
        index = torch.as_tensor(indices, dtype=torch.long)
        if self.rows is not None:
            return Split(self.inputs, self.labels[index], self.rows[index])
        inputs, labels = self.__getitems__(index)
        return Split(inputs, labels)


@dataclass
class DatasetSplits:
    """Train, validation and test splits plus what the model needs to know about them.

    ``augment``, when set, is the dataset's training-time augmentation: the trainer applies it to every
    training batch on the device, ``augment(inputs, seed, epoch, step)``; evaluation never does, since
    the stored samples are the reference code's test-time view (see :mod:`erlmr.data.augment`).
    """

    name: str
    modalities: list[str]
    classes: list[str]
    train: Split
    val: Split
    test: Split
    default_encoders: dict[str, str] = field(default_factory=dict)
    augment: BatchAugment | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {m: tuple(self.train.inputs[m].shape[1:]) for m in self.modalities}


def stratified_split(labels: np.ndarray | torch.Tensor, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with about ``fraction`` of every class held out, seeded."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n = int(round(fraction * len(members)))
        if fraction > 0 and len(members) > 1:
            n = max(n, 1)
        held.append(members[:n])
    held_out = np.sort(np.concatenate(held)) if held else np.array([], dtype=int)
    keep = np.setdiff1d(np.arange(len(labels)), held_out)
    return keep, held_out


def load_dataset(name: str, root: str | None, seed: int, val_fraction: float, options: Mapping[str, object]) -> DatasetSplits:
    """Look ``name`` up in :data:`DATASETS`, check ``options`` against its signature, load it and check
    every split (:func:`~erlmr.data.checks.check_splits`)."""
    loader = DATASETS.get(name)
    params = inspect.signature(loader).parameters
    valid = [p for p in params if p not in ("root", "seed", "val_fraction")]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {unknown} for dataset {name!r}; valid options: {', '.join(valid) or 'none'}"
        )
    splits = loader(root=root, seed=seed, val_fraction=val_fraction, **options)
    check_splits(name, splits)
    return splits
