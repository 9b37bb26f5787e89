"""A quick probe of how informative each modality is: logistic regression on small, standardised features.

Each modality's samples are first reduced to at most :data:`PROBE_FEATURES` features:

* a vector ``(D,)`` is kept as it is, or projected on its first :data:`PCA_COMPONENTS` principal
  components (fitted on train) when wider;
* a sequence ``(C, T)`` gets two candidate representations, and the one that scores better on a seeded
  quarter of the training rows held out is kept: the sequence average-pooled over time, and
  :data:`KERNELS` random convolution kernels with, per kernel, the proportion of positive values and the
  maximum of its output (ROCKET: Dempster, Petitjean & Webb, "ROCKET: exceptionally fast and accurate
  time series classification using random convolutional kernels", Data Min. Knowl. Disc. 2020). Pooling
  keeps where in time things happen (a spoken word), the kernels what patterns recur (a gait);
* anything with more axes ``(C, H, W)``, ``(C, F, H, W)`` is average-pooled over its trailing axes.

Then a ``StandardScaler`` and a multinomial ``LogisticRegression`` are fitted on the training rows of
one modality, and of all of them side by side ("fused"), and scored on the validation and test rows.
The inputs must already be standardised per channel (the data check does it with train statistics).
scikit-learn is imported lazily: ``pip install 'erlmr[probes]'``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..extras import require

PROBE_FEATURES = 512
PCA_COMPONENTS = 128
KERNELS = 200
KERNEL_LENGTH = 9
CHOICE_ROWS = 1000  # training rows that choose between a sequence's two representations
REGULARIZATION = 0.1  # LogisticRegression's C: with a few hundred features per modality and 10^2-10^3 rows
MAX_ITER = 100  # lbfgs steps: the same accuracies as 300 on AV-digits, BasicMotions and the scaled digits
SPLITS = ("train", "val", "test")


def import_sklearn(feature: str = "the data check's probe"):
    """PCA, ConvergenceWarning, LogisticRegression, make_pipeline, StandardScaler, or a
    :class:`~erlmr.errors.MissingDependencyError` saying that ``feature`` needs ``erlmr[probes]``."""
    modules = [
        require(f"sklearn.{name}", "probes", feature)
        for name in ("decomposition", "exceptions", "linear_model", "pipeline", "preprocessing")
    ]
    decomposition, exceptions, linear_model, pipeline, preprocessing = modules
    return (
        decomposition.PCA,
        exceptions.ConvergenceWarning,
        linear_model.LogisticRegression,
        pipeline.make_pipeline,
        preprocessing.StandardScaler,
    )


def pool_trailing(x: torch.Tensor, budget: int) -> torch.Tensor:
    """``(B, C, *rest)`` average-pooled over ``rest`` to at most ``budget`` values per sample (at least one
    per channel); vectors ``(B, D)`` are returned as they are. Pooling within a channel commutes with
    a per-channel shift and scale."""
    if x.dim() == 2:
        return x
    if x.dim() > 5:  # adaptive pooling goes to 3 trailing axes at most
        x = x.flatten(4)
    channels, rest = x.shape[1], x.shape[2:]
    factor = (budget / channels / math.prod(rest)) ** (1 / len(rest))
    if factor >= 1:
        return x
    target = [max(1, int(size * factor)) for size in rest]
    pools: dict[int, Callable[..., torch.Tensor]] = {
        1: F.adaptive_avg_pool1d,
        2: F.adaptive_avg_pool2d,
        3: F.adaptive_avg_pool3d,
    }
    pool = pools[len(rest)]
    return pool(x, target)


def pooled(x: torch.Tensor, budget: int) -> torch.Tensor:
    """:func:`pool_trailing`, flattened to ``(B, values)``."""
    return pool_trailing(x, budget).flatten(1)


class RandomConvolutions:
    """ROCKET-style features of ``(B, C, T)`` sequences: random zero-mean kernels over all channels, at
    dilations 1, 2, 4, ... up to the sequence length, each with a bias drawn from the quantiles of its
    output on the first rows it sees; features: proportion of positive values and maximum per kernel."""

    def __init__(self, channels: int, length: int, seed: int, kernels: int = KERNELS):
        generator = torch.Generator().manual_seed(seed)
        largest = max(0, int(math.log2(max(length - 1, 1) / (KERNEL_LENGTH - 1))))
        self.dilations = [2**e for e in range(largest + 1)]
        per = max(1, kernels // len(self.dilations))
        weights = torch.randn(len(self.dilations), per, channels, KERNEL_LENGTH, generator=generator)
        self.weights = (weights - weights.mean(-1, keepdim=True)) / math.sqrt(channels)
        self.levels = torch.rand(len(self.dilations), per, generator=generator) * 0.5 + 0.25
        self.biases: list[torch.Tensor] | None = None

    def responses(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [
            F.conv1d(x, w, padding=(KERNEL_LENGTH - 1) * d // 2, dilation=d)
            for w, d in zip(self.weights, self.dilations)
        ]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self.responses(x)
        if self.biases is None:
            self.biases = [self.quantile_bias(out[:32], levels) for out, levels in zip(outputs, self.levels)]
        features = []
        for out, bias in zip(outputs, self.biases):
            shifted = out - bias[None, :, None]
            features += [(shifted > 0).float().mean(-1), shifted.amax(-1)]
        return torch.cat(features, 1)

    @staticmethod
    def quantile_bias(out: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        values = out.transpose(0, 1).reshape(len(levels), -1).sort(1).values
        index = (levels * (values.shape[1] - 1)).long()
        return values.gather(1, index[:, None])[:, 0]


@dataclass
class ProbeResult:
    """Accuracy per scored split of each modality's probe and of the fused one, and what each used."""

    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)  # split → modality or "fused" → accuracy
    representation: dict[str, str] = field(default_factory=dict)
    features: dict[str, int] = field(default_factory=dict)
    train_rows: int = 0


Representation = Callable[[torch.Tensor], np.ndarray]


def representations(train: torch.Tensor, seed: int) -> dict[str, Representation]:
    """Candidate representations of one modality, by name; ``train`` (its training rows) fits the PCA."""
    if train.dim() == 2:
        if train.shape[1] <= PROBE_FEATURES:
            return {"values": lambda x: x.numpy()}
        PCA = import_sklearn()[0]
        pca = PCA(min(PCA_COMPONENTS, *train.shape), random_state=seed).fit(train.numpy())
        return {"PCA": lambda x: pca.transform(x.numpy())}
    candidates: dict[str, Representation] = {"pooled": lambda x: pooled(x, PROBE_FEATURES).numpy()}
    if train.dim() == 3 and train.shape[2] >= KERNEL_LENGTH:
        kernels = RandomConvolutions(train.shape[1], train.shape[2], seed)
        candidates["random kernels"] = lambda x: kernels(x).numpy()
    return candidates


def fitted_probe(
    train: tuple[np.ndarray, np.ndarray], seed: int, regularization: float = REGULARIZATION, max_iter: int = MAX_ITER
):
    """A ``StandardScaler`` + multinomial ``LogisticRegression(C=regularization)`` fitted on ``train``
    (rows, labels); a fit stopped at ``max_iter`` lbfgs steps is kept without a warning."""
    _, ConvergenceWarning, LogisticRegression, make_pipeline, StandardScaler = import_sklearn()
    model = make_pipeline(StandardScaler(), LogisticRegression(C=regularization, max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(*train)
    return model


def fit_score(
    train: tuple[np.ndarray, np.ndarray], scored: Mapping[str, tuple[np.ndarray, np.ndarray]], seed: int
) -> dict[str, float]:
    model = fitted_probe(train, seed)  # MAX_ITER steps suffice for a preview
    return {name: float(model.score(x, y)) for name, (x, y) in scored.items() if len(y)}


def choose(candidates: Mapping[str, Representation], train: torch.Tensor, labels: np.ndarray, seed: int) -> str:
    """The candidate that scores best on a seeded quarter of (at most :data:`CHOICE_ROWS`) training rows
    held out from the rest (the first one on a tie)."""
    if len(candidates) == 1:
        return next(iter(candidates))
    order = np.random.default_rng(seed).permutation(len(labels))[:CHOICE_ROWS]
    fit, held = order[len(order) // 4 :], order[: len(order) // 4]
    scores = {}
    for name, represent in candidates.items():
        features = represent(train[torch.from_numpy(order)])
        fitted, scored = features[len(order) // 4 :], features[: len(order) // 4]
        scores[name] = fit_score((fitted, labels[fit]), {"held": (scored, labels[held])}, seed).get("held", 0.0)
    return max(scores, key=lambda name: (scores[name], -list(candidates).index(name)))


def run_probe(
    inputs: Mapping[str, Mapping[str, torch.Tensor]],
    labels: Mapping[str, np.ndarray],
    modalities: Sequence[str],
    seed: int = 0,
) -> ProbeResult:
    """Probe each modality and all of them fused; ``inputs[split][modality]`` holds standardised rows."""
    import_sklearn()
    result = ProbeResult(train_rows=len(labels["train"]))
    chosen = {}
    for m in modalities:
        candidates = representations(inputs["train"][m], seed)
        name = choose(candidates, inputs["train"][m], labels["train"], seed)
        chosen[m] = {s: candidates[name](inputs[s][m]) for s in SPLITS}
        result.representation[m] = f"{name} ({chosen[m]['train'].shape[1]})"
    chosen["fused"] = {s: np.concatenate([chosen[m][s] for m in modalities], axis=1) for s in SPLITS}
    for m, features in chosen.items():
        scores = fit_score(
            (features["train"], labels["train"]), {s: (features[s], labels[s]) for s in ("val", "test")}, seed
        )
        for split, accuracy in scores.items():
            result.accuracy.setdefault(split, {})[m] = accuracy
        result.features[m] = features["train"].shape[1]
    return result
