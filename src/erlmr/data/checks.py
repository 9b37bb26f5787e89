"""Checks every dataset passes once, at load time, over whole splits: nothing malformed reaches training.

Each check is vectorised over the split and names the split, the modality and the first bad sample's
index, so that one message says what to fix.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import DataError

if TYPE_CHECKING:
    from .base import DatasetSplits, Split

SPLIT_NAMES = ("train", "val", "test")


def nonfinite_rows(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """Indices of the samples (first axis) holding a NaN or an Inf."""
    width = math.prod(values.shape[1:])  # not -1: that is ambiguous for zero samples
    if isinstance(values, torch.Tensor):
        finite = torch.isfinite(values.reshape(len(values), width)).all(dim=1).numpy()
    else:
        finite = np.isfinite(values.reshape(len(values), width)).all(axis=1)
    return np.flatnonzero(~finite)


def nonfinite_where(values: np.ndarray | torch.Tensor) -> str:
    """Where the NaN and Inf values are: ``"in 2 sample(s), first at index 7, feature 3"`` (``element (0, 5)``
    for samples of more than one axis), and which features hold no finite value in any sample."""
    flat = values.reshape(len(values), -1)
    finite = torch.isfinite(flat).numpy() if isinstance(flat, torch.Tensor) else np.isfinite(flat)
    rows = np.flatnonzero(~finite.all(axis=1))
    shape = tuple(values.shape[1:])
    if not len(rows):
        return "nowhere"

    def element(flat_index: int) -> str:
        index = np.unravel_index(flat_index, shape)
        return f"feature {index[0]}" if len(shape) == 1 else f"element {tuple(int(i) for i in index)}"

    text = f"in {len(rows)} sample(s), first at index {rows[0]}, {element(int(np.flatnonzero(~finite[rows[0]])[0]))}"
    dead = np.flatnonzero(~finite.any(axis=0))
    if len(dead) == finite.shape[1]:
        return text + "; no value of it is finite"
    if len(dead):
        more = f" and {len(dead) - 3} more" if len(dead) > 3 else ""
        text += f"; {', '.join(element(int(i)) for i in dead[:3])}{more} not finite in any sample"
    return text


def check_split(where: str, split: Split, modalities: list[str], num_classes: int, finite: bool = True) -> None:
    if len(split) == 0:
        raise DataError(f"{where}: the split is empty; it needs at least one sample")
    missing = [m for m in modalities if m not in split.inputs]
    if missing:
        raise DataError(f"{where}: modality {missing} has no data; found {sorted(split.inputs)}")
    for m in modalities:
        x = split.inputs[m]
        if not x.is_floating_point():
            raise DataError(f"{where}: modality {m!r} holds {x.dtype}; loaders must give floating-point tensors")
        if x.dim() < 2 or x[0].numel() == 0:
            raise DataError(
                f"{where}: modality {m!r} has shape {tuple(x.shape)}; every sample needs at least one feature"
            )
        if finite and len(nonfinite_rows(x)):
            raise DataError(f"{where}: modality {m!r} has NaN or Inf {nonfinite_where(x)}; clean or drop those samples")
    labels = split.labels
    if labels.dim() != 1:
        raise DataError(f"{where}: labels must be one integer per sample, got shape {tuple(labels.shape)}")
    bad = torch.nonzero((labels < 0) | (labels >= num_classes)).flatten()
    if len(bad):
        i = int(bad[0])
        raise DataError(
            f"{where}: label {int(labels[i])} at index {i} is out of range; labels must be in 0..{num_classes - 1} "
            f"({num_classes} classes)"
        )


def check_splits(name: str, splits: DatasetSplits, finite: bool = True) -> None:
    """Raise a DataError naming the first problem in any split of dataset ``name`` (``finite=False``: NaN
    and Inf are let through, for the data check to count them)."""
    if splits.num_classes < 2:
        raise DataError(f"dataset {name!r} has {splits.num_classes} class(es); classification needs at least two")
    for split_name in SPLIT_NAMES:
        split = getattr(splits, split_name)
        check_split(f"dataset {name!r}, {split_name} split", split, splits.modalities, splits.num_classes, finite)
    for m in splits.modalities:
        shapes = {s: tuple(getattr(splits, s).inputs[m].shape[1:]) for s in SPLIT_NAMES}
        if len(set(shapes.values())) > 1:
            raise DataError(f"dataset {name!r}: modality {m!r} has different sample shapes across splits: {shapes}")
