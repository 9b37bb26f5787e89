"""A two-view array folder from a real data set on raw, badly spread scales: the data a new user brings.

scikit-learn's bundled handwritten digits (UCI optdigits test part, Alpaydin & Kaynak 1998; 1797 images
of 8×8 pixels valued 0..16, 10 classes) split into two views: ``left`` (the 32 pixels of columns 0-3)
and ``right`` (columns 4-7). Each pixel of ``right`` is multiplied by its own factor, log-spaced from
1 to 10⁴ in a seeded order, as raw measurements in mixed units are. 30 % of the images, stratified,
are the test split; there is no val.npz. Written as the README's array folder: train.npz, test.npz,
meta.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

from erlmr.data import stratified_split

MODALITIES = ["left", "right"]
SCALED = "right"


def digit_views() -> tuple[dict[str, np.ndarray], np.ndarray]:
    digits = load_digits()
    images = digits.images.astype(np.float32)
    views = {"left": images[:, :, :4].reshape(len(images), -1), "right": images[:, :, 4:].reshape(len(images), -1)}
    factors = np.logspace(0, 4, views[SCALED].shape[1])[np.random.default_rng(0).permutation(views[SCALED].shape[1])]
    views[SCALED] = (views[SCALED] * factors).astype(np.float32)
    return views, digits.target.astype(np.int64)


def write_scaled_digits(root: Path, group_size: int | None = None) -> Path:
    """Write the folder; with ``group_size``, each run of ``group_size`` consecutive images of a split
    shares a ``group`` id (as the windows of one recording would)."""
    views, labels = digit_views()
    train, test = stratified_split(labels, 0.3, seed=0)
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("test", test)):
        arrays = {m: views[m][rows] for m in MODALITIES}
        if group_size is not None:
            offset = 0 if name == "train" else len(train)
            arrays["group"] = offset + np.arange(len(rows)) // group_size
        np.savez(root / f"{name}.npz", label=labels[rows], **arrays)
    (root / "meta.json").write_text(json.dumps({"modalities": MODALITIES, "classes": [str(c) for c in range(10)]}))
    return root
