"""A seeded M-modality classification problem with a dominant and a weak modality."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError
from .base import DATASETS, DatasetSplits, Split


def make_synthetic(
    strengths: list[float], dim: int, num_classes: int, size: int, prototypes: np.ndarray, rng: np.random.Generator
) -> Split:
    labels = rng.integers(0, num_classes, size)
    inputs = {}
    for m, strength in enumerate(strengths):
        signal = strength * prototypes[m][labels]
        inputs[f"m{m}"] = torch.from_numpy((signal + rng.standard_normal((size, dim))).astype(np.float32))
    return Split(inputs, torch.from_numpy(labels))


@DATASETS.register("synthetic", "seeded Gaussian-prototype data, one modality per signal strength (dominant first)")
def load_synthetic(
    root: str | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    # The options check reads the `list` annotation (a YAML list); the default stays an immutable tuple.
    strengths: list = (2.5, 1.2),  # type: ignore[assignment]
    dim: int = 32,
    num_classes: int = 4,
    train_size: int = 1000,
    test_size: int = 1000,
    generator_seed: int = 0,
) -> DatasetSplits:
    """Modality m of a sample of class y is ``strengths[m]·p[m, y] + N(0, I)`` with fixed random unit
    prototypes ``p``. The strongest modality is learned first and, under joint training, starves the
    others of gradient; every modality is still informative on its own."""
    strengths = [float(s) for s in strengths]
    if len(strengths) < 2 or min(strengths) < 0:
        raise ConfigError(f"synthetic strengths must list >= 2 non-negative values, got {strengths}")
    if dim < 1 or num_classes < 2 or train_size < num_classes or test_size < 1:
        raise ConfigError("synthetic needs dim >= 1, num_classes >= 2, train_size >= num_classes, test_size >= 1")
    rng = np.random.default_rng(generator_seed)
    prototypes = rng.standard_normal((len(strengths), num_classes, dim))
    prototypes /= np.linalg.norm(prototypes, axis=2, keepdims=True)
    val_size = max(num_classes, int(round(val_fraction * train_size)))
    train, val, test = (
        make_synthetic(strengths, dim, num_classes, n, prototypes, rng) for n in (train_size, val_size, test_size)
    )
    modalities = [f"m{m}" for m in range(len(strengths))]
    classes = [f"class{c}" for c in range(num_classes)]
    return DatasetSplits("synthetic", modalities, classes, train, val, test)
