"""In-memory multi-modal splits and the dataset registry.

A dataset loader is a function registered in :data:`DATASETS`::

    @DATASETS.register("name", "one-line description")
    def load(root: str | None, seed: int, val_fraction: float, **options) -> DatasetSplits: ...

Its keyword options become the ``data.options`` of a config, validated by their annotations (an
unknown option is an error that lists the valid ones; a range is declared as
``Annotated[int, Bounds(ge=1)]``, see :mod:`erlmr.options`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from ..errors import DataError
from ..registry import Registry
from .augment import BatchAugment
from .checks import check_splits

DatasetLoader = Callable[..., "DatasetSplits"]
DATASETS: Registry[DatasetLoader] = Registry("dataset", positional=("root", "seed", "val_fraction"))


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

    def __getitems__(self, indices: Sequence[int] | torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        rows = index if self.rows is None else self.rows[index]
        return {name: x[rows].float() for name, x in self.inputs.items()}, self.labels[index]

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        row = i if self.rows is None else int(self.rows[i])
        return {name: x[row].float() for name, x in self.inputs.items()}, self.labels[i]

    def batches(
        self, batch_size: int, device: torch.device | str = "cpu"
    ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """The split in order, one indexing operation per batch, on ``device``: what every pass over a
        split outside training (evaluation, a method's statistics) iterates over."""
        for start in range(0, len(self), batch_size):
            inputs, labels = self.__getitems__(range(start, min(start + batch_size, len(self))))
            yield {m: x.to(device) for m, x in inputs.items()}, labels.to(device)

    def subset(self, indices: Sequence[int] | torch.Tensor | np.ndarray) -> "Split":
        index = torch.as_tensor(indices, dtype=torch.long)
        if self.rows is not None:
            return Split(self.inputs, self.labels[index], self.rows[index])
        inputs, labels = self.__getitems__(index)
        return Split(inputs, labels)


@dataclass
class DatasetSplits:
    """Train, validation and test splits plus what the model needs to know about them.

    ``normalization`` is the input normalisation ``data.normalize: auto`` picks for this dataset
    (:mod:`erlmr.nn.normalize`): ``none`` for a dataset whose loader applies its reference code's own
    transforms, ``standard`` for raw data. ``groups``, when known, maps a split name to one group id per
    sample (a subject, a recording), for the data check.
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
    normalization: str = "none"
    groups: Mapping[str, Sequence | np.ndarray] = field(default_factory=dict)
    augment: BatchAugment | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def input_normalization(self, setting: str) -> str:
        """The normalisation a ``data.normalize`` setting means for this dataset."""
        return self.normalization if setting == "auto" else setting

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {m: tuple(self.train.inputs[m].shape[1:]) for m in self.modalities}

    def fingerprint(self, rows: int = 512) -> str:
        """A short hash of the data as loaded: classes, every split's labels and sample shapes, and the
        values of up to ``rows`` evenly spaced samples per split. Two builds that differ (another
        espeak-ng, another cache) get different fingerprints; reading a few rows keeps it cheap.
        The validation split is drawn per seed, so each seed's splits have their own fingerprint."""
        digest = hashlib.sha256(json.dumps([self.name, self.modalities, self.classes]).encode())
        for split in (self.train, self.val, self.test):
            digest.update(split.labels.numpy().tobytes())
            picked = torch.linspace(0, max(len(split) - 1, 0), min(rows, len(split))).long().unique()
            inputs, _ = split.__getitems__(picked)
            for m in self.modalities:
                x = inputs[m].contiguous()
                digest.update(str(tuple(x.shape)).encode() + x.numpy().tobytes())
        return digest.hexdigest()[:16]


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


def grouped_split(
    labels: np.ndarray | torch.Tensor, groups: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) that hold out whole groups, about ``fraction`` of every class, seeded.

    Groups are visited in a seeded random order and one is held out when that brings the held-out class
    counts closer (in squared error) to ``fraction`` of the class counts: the greedy stratification of
    scikit-learn's StratifiedGroupKFold, for one split. At least one group is held out (the one closest
    to the target when every group alone overshoots it) and at least one is kept.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    names, group_of = np.unique(groups, return_inverse=True)
    if fraction <= 0 or len(labels) == 0:
        return np.arange(len(labels)), np.array([], dtype=int)
    if len(names) < 2:
        raise DataError(
            f"the validation split keeps whole groups apart, but the training data has {len(names)} group; "
            "give at least two groups, or a val.npz"
        )
    classes, label_of = np.unique(labels, return_inverse=True)
    counts = np.zeros((len(names), len(classes)))
    np.add.at(counts, (group_of, label_of), 1)
    target = fraction * counts.sum(0)
    held, chosen = np.zeros(len(classes)), []
    for g in np.random.default_rng(seed).permutation(len(names))[:-1]:  # the last group visited stays in train
        if np.sum((held + counts[g] - target) ** 2) < np.sum((held - target) ** 2):
            held += counts[g]
            chosen.append(g)
    if not chosen:
        chosen = [int(np.argmin(((counts - target) ** 2).sum(1)))]
    held_out = np.flatnonzero(np.isin(group_of, chosen))
    return np.setdiff1d(np.arange(len(labels)), held_out), held_out


def load_dataset(
    name: str, root: str | None, seed: int, val_fraction: float, options: Mapping[str, object]
) -> DatasetSplits:
    """Look ``name`` up in :data:`DATASETS`, validate ``options`` against its keyword parameters, load it
    and check every split (:func:`~erlmr.data.checks.check_splits`)."""
    splits = DATASETS.build(name, options, root, seed, val_fraction)
    check_splits(name, splits)
    return splits
