"""UEA BasicMotions as shipped inside the aeon wheel: accelerometer and gyroscope, 4 activities.

Clements et al., UEA multivariate time series archive (Bagnall et al. 2018). 40 train / 40 test series
of 6 channels × 100 steps (accelerometer xyz, gyroscope xyz) from a smart watch.
"""

from __future__ import annotations

import numpy as np
import torch

from ..extras import require
from .base import DATASETS, DatasetSplits, Split, stratified_split

MODALITY_CHANNELS = {"acc": slice(0, 3), "gyro": slice(3, 6)}


def _read(split: str) -> tuple[np.ndarray, np.ndarray]:
    aeon_datasets = require("aeon.datasets", "datasets", "the basicmotions dataset")
    x, y = aeon_datasets.load_basic_motions(split=split)
    return np.asarray(x, dtype=np.float32), np.asarray(y)


@DATASETS.register("basicmotions", "UEA BasicMotions from the aeon wheel: acc + gyro, 4 classes, 40/40")
def load_basicmotions(root: str | None = None, seed: int = 0, val_fraction: float = 0.1) -> DatasetSplits:
    x_train, y_train = _read("train")
    x_test, y_test = _read("test")
    classes = sorted(str(c) for c in set(y_train))
    index = {c: i for i, c in enumerate(classes)}
    # Standardise every channel with the training series' statistics only.
    mean = x_train.mean(axis=(0, 2), keepdims=True)
    std = x_train.std(axis=(0, 2), keepdims=True) + 1e-6

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        tensor = torch.from_numpy((x - mean) / std)
        inputs = {m: tensor[:, channels].contiguous() for m, channels in MODALITY_CHANNELS.items()}
        return Split(inputs, torch.tensor([index[str(c)] for c in y]))

    train, test = split(x_train, y_train), split(x_test, y_test)
    keep, held = stratified_split(train.labels.numpy(), val_fraction, seed)
    return DatasetSplits("basicmotions", list(MODALITY_CHANNELS), classes, train.subset(keep), train.subset(held), test)
