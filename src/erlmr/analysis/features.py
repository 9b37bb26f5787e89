"""What each trained encoder learned, apart from the fusion head: a linear probe and a 2-D map per modality.

At the end of training (:meth:`erlmr.training.trainer.Trainer.finish`: the best-validation checkpoint,
eval mode, every modality given) the features of each modality a method predicts from, its fusion-head
input ``output.features[m]`` of ``method.predict`` (the encoder output averaged over positions, or the
Euler features ``[real ‖ imag]``), are read in one pass per split:

* **linear probe**: per modality, a standardising multinomial logistic regression
  (:func:`erlmr.analysis.probe.fitted_probe`) is fitted on a seeded class-stratified sample of at most
  ``PROBE_ROWS["train"]`` training rows for each inverse regularisation strength C in
  :data:`REGULARIZATIONS`; the C with the best accuracy on a stratified sample of at most
  ``PROBE_ROWS["val"]`` validation rows is kept (ties: the stronger regularisation). Only then is the test
  split read, and the kept probe scored on every test row. The features are frozen: nothing is trained
  but the probe.
* **feature maps**: a 2-D t-SNE (van der Maaten & Hinton, "Visualizing data using t-SNE", JMLR 2008) of
  each modality's test features, on a seeded stratified sample of at most :data:`MAP_POINTS` test rows
  (projected on their first :data:`MAP_PCA` principal components first), kept in the run folder's
  ``feature_maps.npz`` for ``erlmr report``.

Both are the evaluation modes of BalanceBenchmark (Xu, Cui, Huang, Wang, Hu, "BalanceBenchmark: a survey
for multimodal imbalance learning", arXiv:2502.10816, 2025; GeWu-Lab/BalanceBenchmark
``balancemm/trainer/LinearProbe_trainer.py`` and ``balancemm/analysis/t_sne.py``); docs/metrics.md says what
differs (selection on validation, not test; one probe per modality, not slices of a joint one).
scikit-learn comes with ``pip install 'erlmr[probes]'``.
"""

from __future__ import annotations

import functools
import inspect
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..config import TrainConfig
from ..data import DatasetSplits, Split
from ..errors import MissingDependencyError
from ..extras import require
from ..methods import Method
from ..nn.model import MultiModalModel
from ..training.run_folder import FEATURE_MAPS, RunFolder
from .probe import fitted_probe, import_sklearn

#: rows the probe is fitted on (train) and selected on (val): a bound on its cost at the end of every run
PROBE_ROWS = {"train": 4000, "val": 2000}
#: inverse regularisation strengths tried, strongest first (a tie keeps the stronger one)
REGULARIZATIONS = (0.001, 0.01, 0.1, 1.0, 10.0)
PROBE_ITERATIONS = 200
MAP_POINTS = 500
MAP_PCA = 50
MAP_ITERATIONS = 500
PERPLEXITY = 30.0

#: per modality its (rows, D) features, and the rows' labels
Features = tuple[dict[str, np.ndarray], np.ndarray]


def stratified_rows(labels: np.ndarray, keep: int, seed: int) -> np.ndarray:
    """At most ``keep`` row indices, sorted, drawn with a seeded generator so that every class keeps its
    share of the rows (largest remainders round); all rows when there are no more than ``keep``."""
    if keep >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * keep / len(labels)
    quota = np.floor(exact).astype(int)
    quota[np.argsort(quota - exact, kind="stable")[: keep - quota.sum()]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))


@torch.no_grad()
def split_features(
    model: MultiModalModel, method: Method, split: Split, batch_size: int, device: torch.device
) -> Features:
    """The fusion-head input of each modality ``method.predict`` uses, for every row of ``split``."""
    model.eval()
    method.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    labels = []
    for inputs, y in split.batches(batch_size, device):
        output = method.predict(model, inputs)
        for m in model.modalities:
            if m in output.encoded:  # a modality the method leaves out (unimodal) is not probed
                parts.setdefault(m, []).append(output.features[m].float().cpu())
        labels.append(y.cpu())
    return {m: torch.cat(p).numpy() for m, p in parts.items()}, torch.cat(labels).numpy()


@dataclass
class Choice:
    """The probe kept for one modality, its C and its validation accuracy."""

    probe: Any
    regularization: float
    val_accuracy: float


Rows = tuple[np.ndarray, np.ndarray]  # one modality's (rows, D) features and their labels


def choose_regularization(train: Rows, val: Rows, seed: int) -> Choice:
    """Fit one probe per C of :data:`REGULARIZATIONS` on ``train`` and keep the best on ``val``."""
    choices = []
    for regularization in REGULARIZATIONS:
        probe = fitted_probe(train, seed, regularization, PROBE_ITERATIONS)
        choices.append(Choice(probe, regularization, float(probe.score(*val))))
    return max(choices, key=lambda choice: choice.val_accuracy)  # the first of equals: the stronger regularisation


@dataclass
class ProbeScores:
    val: dict[str, float]
    test: dict[str, float]
    regularization: dict[str, float]


def linear_probe(train: Features, val: Features, test: Callable[[], Features], seed: int) -> ProbeScores:
    """Per modality of ``train``: the probe chosen on ``val``, then scored on ``test()``, which is called
    only once every choice is made (the test split plays no part in them)."""
    chosen = {m: choose_regularization((x, train[1]), (val[0][m], val[1]), seed) for m, x in train[0].items()}
    test_features, test_labels = test()
    return ProbeScores(
        val={m: c.val_accuracy for m, c in chosen.items()},
        test={m: float(c.probe.score(test_features[m], test_labels)) for m, c in chosen.items()},
        regularization={m: c.regularization for m, c in chosen.items()},
    )


def constant(features: np.ndarray) -> bool:
    """Whether every row is the same (a dead encoder): t-SNE has no map of it (and scikit-learn's PCA
    initialisation crashes the process on it)."""
    return bool(np.all(features == features[:1]))


def embed(features: np.ndarray, seed: int) -> np.ndarray:
    """2-D t-SNE of ``features`` (rows, D), after a PCA to :data:`MAP_PCA` components when wider; all
    zeros for constant features."""
    if constant(features):
        return np.zeros((len(features), 2))
    PCA = import_sklearn(FEATURES["feature_maps"])[0]
    TSNE = require("sklearn.manifold", "probes", FEATURES["feature_maps"]).TSNE
    if features.shape[1] > MAP_PCA and len(features) > MAP_PCA:
        features = PCA(MAP_PCA, random_state=seed).fit_transform(features)
    perplexity = min(PERPLEXITY, (len(features) - 1) / 3)  # t-SNE needs perplexity < rows
    tsne = TSNE(2, perplexity=perplexity, init="pca", learning_rate="auto", max_iter=MAP_ITERATIONS, random_state=seed)
    return tsne.fit_transform(features.astype(np.float64))


def feature_maps(test: Features, classes: Sequence[str], seed: int) -> dict[str, np.ndarray]:
    """The arrays of ``feature_maps.npz``: ``coordinates`` (M, points, 2), the points' ``labels`` and test
    ``rows``, the ``modalities`` (in the order of ``coordinates``) and the ``classes`` (by label)."""
    features, labels = test
    rows = stratified_rows(labels, MAP_POINTS, seed)
    return {
        "coordinates": np.stack([embed(x[rows], seed) for x in features.values()]).astype(np.float32),
        "labels": labels[rows].astype(np.int64),
        "rows": rows.astype(np.int64),
        "modalities": np.array(list(features), dtype=str),
        "classes": np.array(list(classes), dtype=str),
    }


def stratified_features(model, method, split: Split, keep: int | None, seed: int, batch_size: int, device) -> Features:
    """:func:`split_features` of a stratified sample of at most ``keep`` rows (every row for None)."""
    if keep is not None and keep < len(split):
        split = split.subset(torch.from_numpy(stratified_rows(split.labels.numpy(), keep, seed)))
    return split_features(model, method, split, batch_size, device)


def probe_summary(
    summary: dict,
    read: Callable[[Split, int | None], Features],
    splits: DatasetSplits,
    test: Callable[[], Features],
    seed: int,
) -> None:
    """Run the linear probe and record it: ``val``/``test`` ``linear_probe`` and ``linear_probe``."""
    train, val = read(splits.train, PROBE_ROWS["train"]), read(splits.val, PROBE_ROWS["val"])
    scores = linear_probe(train, val, test, seed)
    summary["val"]["linear_probe"], summary["test"]["linear_probe"] = scores.val, scores.test
    summary["linear_probe"] = {
        "regularization": scores.regularization,
        "rows": {"train": len(train[1]), "val": len(val[1]), "test": len(test()[1])},
        "features": {m: int(x.shape[1]) for m, x in train[0].items()},
    }


def maps_summary(summary: dict, test: Features, classes: Sequence[str], seed: int, folder: RunFolder) -> None:
    """Compute the feature maps, write ``feature_maps.npz`` and record ``feature_maps``."""
    arrays = feature_maps(test, classes, seed)
    folder.write_feature_maps(arrays)
    points = arrays["coordinates"].shape[1]
    summary["feature_maps"] = {
        "file": FEATURE_MAPS,
        "method": "t-SNE",
        "points": points,
        "perplexity": min(PERPLEXITY, (points - 1) / 3),
        "iterations": MAP_ITERATIONS,
        "constant": [m for m, x in test[0].items() if constant(x[arrays["rows"]])],
    }


#: what each part is called in a message
FEATURES = {"linear_probe": "the linear probe", "feature_maps": "the feature map"}


def unavailable(part: str) -> str | None:
    """Why ``part`` (a key of :data:`FEATURES`) cannot run here: scikit-learn missing (or, for t-SNE's
    ``max_iter``, older than 1.5); None when it can."""
    try:
        import_sklearn(FEATURES[part])
        if part == "feature_maps":
            tsne = require("sklearn.manifold", "probes", FEATURES[part]).TSNE
    except MissingDependencyError as error:
        return str(error)
    if part == "feature_maps" and "max_iter" not in inspect.signature(tsne).parameters:  # n_iter before 1.5
        return f"{FEATURES[part]} needs scikit-learn >= 1.5: pip install --upgrade 'erlmr[probes]'"
    return None


def record_features(
    summary: dict,
    model: MultiModalModel,
    method: Method,
    splits: DatasetSplits,
    config: TrainConfig,
    device: torch.device,
    folder: RunFolder,
) -> None:
    """Add the linear probe and the feature maps of the trained ``model`` to ``summary`` (and write
    ``feature_maps.npz`` into ``folder``); each part switched off in ``config`` (``train.linear_probe``,
    ``train.feature_maps``), or without scikit-learn, is recorded as ``{"skipped": why}``. Their seconds
    go to ``summary["cost"]``."""
    wanted = []
    for name, on in (("linear_probe", config.linear_probe), ("feature_maps", config.feature_maps)):
        why = unavailable(name) if on else f"train.{name} is false"
        if why is None:
            wanted.append(name)
        else:
            summary[name] = {"skipped": why}

    def read(split: Split, keep: int | None) -> Features:
        return stratified_features(model, method, split, keep, config.seed, config.batch_size, device)

    @functools.cache
    def test() -> Features:  # every test row, read once, and only when first asked for
        return read(splits.test, None)

    for name in wanted:
        started = time.perf_counter()
        if name == "linear_probe":
            probe_summary(summary, read, splits, test, config.seed)
        else:
            maps_summary(summary, test(), splits.classes, config.seed, folder)
        summary.setdefault("cost", {})[f"{name}_s"] = round(time.perf_counter() - started, 3)
