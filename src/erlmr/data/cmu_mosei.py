"""CMU-MOSEI sentiment from the feature pickles of the Multimodal Transformer, 3 modalities, 2 classes.

Zadeh et al., "Multimodal Language Analysis in the Wild: CMU-MOSEI Dataset and Interpretable Dynamic
Fusion Graph", ACL 2018. The features are the widely used MulT pickles (Tsai et al., ACL 2019,
github.com/yaohungt/Multimodal-Transformer): ``mosei_senti_data.pkl`` (word-aligned, 50 steps) or
``mosei_senti_data_noalign.pkl``, a dict of ``train`` / ``valid`` / ``test`` splits, each holding
``text`` (N, T, 300) GloVe, ``audio`` (N, T, 74) COVAREP, ``vision`` (N, T, 35) Facet, ``labels``
(N, 1, 1) sentiment in [-3, 3] and ``id``; the official folds are split by video. BalanceBenchmark
(github.com/GeWu-Lab/BalanceBenchmark) reads the same files.

Binary sentiment as the balancing benchmarks train it: negative (< 0) vs non-negative (>= 0);
``exclude_zero=true`` drops the neutral (0) samples instead, the "non-zero" protocol. Non-finite feature
values (COVAREP has -inf) become 0, as MulT does. Samples are (features, steps): audio (74, T), visual
(35, T), text (300, T). The official validation split is used as is.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import DATASETS
from .store import Recipe, Record, RecordedSplits, dataset_root, load_recipe

CLASSES = ["negative", "positive"]
MODALITY_KEYS = {"audio": "audio", "visual": "vision", "text": "text"}
SPLIT_KEYS = {"train": "train", "val": "valid", "test": "test"}
FILES = {True: "mosei_senti_data.pkl", False: "mosei_senti_data_noalign.pkl"}


#: the globals a pickle of dicts and lists of numpy arrays refers to; a MulT pickle needs no others
ARRAY_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    *((f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")),
    *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
}


class ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays in plain containers and refuses every other object before it is built, so
    that a crafted feature file cannot run code (a pickle may name any function, ``os.system`` too)."""

    def find_class(self, module: str, name: str):
        if (module, name) not in ARRAY_GLOBALS:
            raise pickle.UnpicklingError(
                f"it holds a pickled {module}.{name}, not only numpy arrays; erlmr refuses to load it, because "
                "unpickling such an object can run arbitrary code"
            )
        return super().find_class(module, name)


def read_pickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"missing file {path} (the CMU-MOSEI feature pickle)")
    try:
        with path.open("rb") as file:
            try:
                return ArraysOnlyUnpickler(file).load()
            except UnicodeDecodeError:  # written by Python 2
                file.seek(0)
                return ArraysOnlyUnpickler(file, encoding="latin1").load()
    except Exception as error:  # unpickling a damaged file can raise almost anything
        raise DataError(f"cannot read the pickle {path}: {error}") from None


def split_arrays(path: Path, data: dict, split: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The (N, C, T) features per modality and the sentiment scores of one split."""
    key = SPLIT_KEYS[split]
    part = data.get(key) if isinstance(data, dict) else None
    if not isinstance(part, dict):
        raise DataError(f"{path} has no {key!r} split; a MulT pickle holds 'train', 'valid' and 'test'")
    missing = [k for k in (*MODALITY_KEYS.values(), "labels") if k not in part]
    if missing:
        raise DataError(f"{path}: split {key!r} lacks {missing}; found {sorted(part)}")
    features = {}
    for modality, name in MODALITY_KEYS.items():
        array = np.asarray(part[name], dtype=np.float32)
        if array.ndim != 3:
            raise DataError(f"{path}: {key}/{name} has shape {array.shape}; expected (samples, steps, features)")
        features[modality] = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0).transpose(0, 2, 1)
    scores = np.asarray(part["labels"], dtype=np.float32).reshape(len(part["labels"]), -1)[:, 0]
    counts = {name: len(features[m]) for m, name in MODALITY_KEYS.items()} | {"labels": len(scores)}
    if len(set(counts.values())) != 1:
        raise DataError(f"{path}: the modalities of split {key!r} disagree on the number of samples {counts}")
    return features, scores


@DATASETS.register("cmu-mosei", "CMU-MOSEI sentiment: audio, visual, text features, 2 classes (MulT pickle)")
def load_cmu_mosei(
    root: str | None,
    seed: int = 0,
    val_fraction: float = 0.1,
    aligned: bool = True,
    exclude_zero: bool = False,
    cache: bool = True,
    cache_dir: str | None = None,
    skip_bad: bool = False,
) -> RecordedSplits:
    """``root`` is the folder holding the pickle, or the pickle itself. ``val_fraction`` is unused."""
    location = dataset_root(root, "cmu-mosei")
    path = location if location.is_file() else location / FILES[aligned]
    data = read_pickle(path)
    features, records = {}, []
    for split in SPLIT_KEYS:
        features[split], scores = split_arrays(path, data, split)
        for i, score in enumerate(scores):
            if exclude_zero and score == 0:
                continue
            key = f"{split}/{i}"
            records.append(Record(key, int(score >= 0), split, key, f"{path} [{SPLIT_KEYS[split]} sample {i}]"))
    shapes = {split: {m: a.shape[1:] for m, a in arrays.items()} for split, arrays in features.items()}
    if shapes["train"] != shapes["test"] or shapes["train"] != shapes["val"]:
        raise DataError(f"{path}: the splits have different feature shapes {shapes}")

    def decode(record: Record) -> dict:
        split, index = record.key.split("/")
        return {m: features[split][m][int(index)][None] for m in MODALITY_KEYS}

    recipe = Recipe(
        name="cmu-mosei",
        modalities=list(MODALITY_KEYS),
        classes=CLASSES,
        records=records,
        decode=decode,
        settings={"file": path.name, "exclude_zero": exclude_zero},
        sources={split: f"{path} ['{key}']" for split, key in SPLIT_KEYS.items()},
        default_encoders={m: "transformer" for m in MODALITY_KEYS},
    )
    return load_recipe(recipe, path.parent, seed, val_fraction, cache, cache_dir, skip_bad)
