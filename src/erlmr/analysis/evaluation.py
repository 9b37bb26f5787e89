"""Modality imbalance of a trained model: Shapley contributions, imbalance degree, missing-modality accuracy.

A modality "outside a subset" is *missing* exactly as ``model(inputs, absent=...)`` treats it: its
fusion-head input is all zeros (see :class:`erlmr.nn.model.MultiModalModel`). The value of a subset ``S``
of modalities is the fused accuracy with every modality outside ``S`` missing; ``v(∅)`` is the accuracy
of the head fed zeros for every modality (a constant prediction). docs/metrics.md gives the formulas.
"""

from __future__ import annotations

import itertools
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Collection, ContextManager, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..data import Split
from ..methods import Method
from ..nn.model import MultiModalModel
from .metrics import accuracy, confusion_matrix, imbalance_degree, macro_f1, macro_f1_of_confusion, shapley_values


def subsets_of(players: Sequence[str]) -> list[frozenset[str]]:
    """All 2^M subsets, smallest first."""
    return [frozenset(c) for size in range(len(players) + 1) for c in itertools.combinations(players, size)]


def subset_name(subset: Collection[str], order: Sequence[str]) -> str:
    return "+".join(m for m in order if m in subset) or "none"


@torch.no_grad()
def evaluate(
    model: MultiModalModel,
    method: Method,
    split: Split,
    batch_size: int,
    device: torch.device,
    absent: Collection[str] = (),
) -> dict[str, Any]:
    """Fused accuracy, loss and macro-F1, and each present modality's accuracy from its own logits."""
    model.eval()
    method.eval()
    per_modality: dict[str, list[torch.Tensor]] = {m: [] for m in model.modalities if m not in absent}
    fused, labels_all = [], []
    total_loss = 0.0
    for inputs, labels in split.batches(batch_size, device):
        batch = predict_batch(model, method, inputs, labels, absent)
        total_loss += batch.loss
        fused.append(batch.fused)
        for m in per_modality:
            per_modality[m].append(batch.modality[m])
        labels_all.append(labels.cpu())
    predictions, labels = torch.cat(fused), torch.cat(labels_all)
    return {
        "accuracy": accuracy(predictions, labels),
        "loss": total_loss / max(len(labels), 1),
        "macro_f1": macro_f1(predictions, labels, model.head.num_classes),
        "modality_accuracy": {m: accuracy(torch.cat(p), labels) for m, p in per_modality.items()},
        "predictions": predictions,
        "labels": labels,
    }


@dataclass
class BatchPrediction:
    """One batch's summed cross-entropy and its predicted classes (on the CPU), fused and per modality."""

    loss: float
    fused: torch.Tensor
    modality: dict[str, torch.Tensor]


@torch.no_grad()
def predict_batch(
    model: MultiModalModel,
    method: Method,
    inputs: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    absent: Collection[str] = (),
) -> BatchPrediction:
    """The method's prediction for one batch, what every evaluation pass adds up."""
    output = method.predict(model, inputs, absent)
    modality = {m: output.modality_logits[m].argmax(1).cpu() for m in model.modalities if m not in absent}
    loss = float(F.cross_entropy(output.logits, labels, reduction="sum"))
    return BatchPrediction(loss, output.logits.argmax(1).cpu(), modality)


#: predicts logits for a batch with some modalities absent: ``predict(inputs, absent) -> (B, C) logits``
Predictor = Callable[[Mapping[str, torch.Tensor], Sequence[str]], torch.Tensor]


@torch.no_grad()
def subset_accuracies_of(
    predict: Predictor,
    batches: Iterable[tuple[Mapping[str, torch.Tensor], torch.Tensor]],
    modalities: Sequence[str],
    players: Sequence[str],
    per_batch: Callable[[], ContextManager] = nullcontext,
    ask_empty: bool = True,
) -> dict[frozenset[str], float]:
    """Fused accuracy ``v(S)`` over ``batches`` for every subset ``S`` of ``players``: ``predict`` with
    every modality outside S absent. ``predict`` is asked for S = ∅ too (erlmr's model then predicts
    from zero features, so a modality the model ignores contributes exactly 0); a model that cannot
    predict without inputs (``ask_empty=False``) gets for ``v(∅)`` the accuracy of always predicting
    the most frequent class of the batches. ``per_batch`` is entered around the predictions of a batch."""
    subsets = [s for s in subsets_of(players) if s or ask_empty]
    correct, class_counts = dict.fromkeys(subsets, 0), torch.zeros(0, dtype=torch.long)
    for inputs, labels in batches:
        with per_batch():
            for subset, count in zip(subsets, subset_correct(predict, inputs, labels, modalities, subsets)):
                correct[subset] += count
        class_counts = _add_counts(class_counts, torch.bincount(labels.cpu()))
    seen = max(int(class_counts.sum()), 1)
    value = {subset: count / seen for subset, count in correct.items()}
    if not ask_empty:
        value[frozenset()] = int(class_counts.max()) / seen if len(class_counts) else 0.0
    return value


def subset_correct(
    predict: Predictor,
    inputs: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    modalities: Sequence[str],
    subsets: Sequence[frozenset[str]],
) -> list[int]:
    """How many samples of one batch ``predict`` gets right with each subset's outside modalities absent."""
    return [
        int((predict(inputs, [m for m in modalities if m not in subset]).argmax(1) == labels).sum())
        for subset in subsets
    ]


def _add_counts(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    size = max(len(a), len(b))
    return F.pad(a, (0, size - len(a))) + F.pad(b, (0, size - len(b)))


def subset_accuracies(
    model: MultiModalModel,
    method: Method,
    split: Split,
    batch_size: int,
    device: torch.device,
    absent: Collection[str] = (),
) -> dict[frozenset[str], float]:
    """:func:`subset_accuracies_of` for a trained model and its method on ``split`` (for S = ∅ the head
    on zeros). Each encoder runs once per batch (:meth:`MultiModalModel.reusing_encodings`); only what
    follows the encoders re-runs for each of the 2^M subsets."""
    model.eval()
    method.eval()
    players = [m for m in model.modalities if m not in absent]
    return subset_accuracies_of(
        lambda inputs, missing: method.predict(model, inputs, missing).logits,
        split.batches(batch_size, device),
        model.modalities,
        players,
        model.reusing_encodings,
    )


def imbalance_from(
    value: Mapping[frozenset[str], float], players: Sequence[str], order: Sequence[str]
) -> dict[str, Any]:
    """Shapley contributions, imbalance degree, accuracy with each modality missing and of every subset,
    from the accuracies ``value`` of every subset of ``players``."""
    contributions = shapley_values(value, players)
    everything = frozenset(players)
    return {
        "contribution": contributions,
        "imbalance_degree": imbalance_degree(contributions),
        "missing_modality_accuracy": {m: value[everything - {m}] for m in players},
        "subset_accuracy": {subset_name(s, order): v for s, v in value.items()},
    }


def imbalance_report(
    model: MultiModalModel,
    method: Method,
    split: Split,
    batch_size: int,
    device: torch.device,
    absent: Collection[str] = (),
) -> dict[str, Any]:
    """Shapley contribution of each modality to accuracy, the imbalance degree, the accuracy with each
    modality missing, and the accuracy of every subset (keyed like ``"audio+visual"``, ``"none"``)."""
    players = [m for m in model.modalities if m not in absent]
    value = subset_accuracies(model, method, split, batch_size, device, absent)
    return imbalance_from(value, players, model.modalities)


class EvaluationTally:
    """The sums behind the validation metrics, added one batch at a time: for a loop that is handed its
    batches (a Lightning module's ``validation_step``) instead of iterating a split.

    ``sums`` is one float64 tensor (summed loss, the confusion matrix, each modality's and each subset's
    correct predictions), so a distributed run adds the ranks' tallies in one all-reduce before
    :meth:`metrics` reads them. The metrics are :func:`evaluate`'s and :func:`imbalance_report`'s over
    the same batches.
    """

    def __init__(self, modalities: Sequence[str], num_classes: int):
        self.modalities, self.num_classes = list(modalities), num_classes
        self.subsets = subsets_of(self.modalities)
        self.sizes = [1, num_classes * num_classes, len(self.modalities), len(self.subsets)]
        self.sums = torch.zeros(sum(self.sizes), dtype=torch.float64)

    @torch.no_grad()
    def add(
        self, model: MultiModalModel, method: Method, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor
    ) -> None:
        """Add one batch (on the model's device). Each encoder runs once for all 2^M subsets."""
        with model.reusing_encodings():
            batch = predict_batch(model, method, inputs, labels)
            predict: Predictor = lambda x, missing: method.predict(model, x, missing).logits  # noqa: E731
            subsets = subset_correct(predict, inputs, labels, self.modalities, self.subsets)
        labels = labels.cpu()
        confusion = confusion_matrix(batch.fused, labels, self.num_classes).flatten().tolist()
        modality = [int((batch.modality[m] == labels).sum()) for m in self.modalities]
        self.sums += torch.tensor([batch.loss, *confusion, *modality, *subsets], dtype=torch.float64)

    def metrics(self, sums: torch.Tensor | None = None) -> dict[str, Any]:
        """Accuracy, loss, macro-F1, each modality's accuracy and the imbalance report, from ``sums``
        (default: this tally's own; pass the sum over ranks in a distributed run)."""
        loss, confusion, modality, subsets = (self.sums if sums is None else sums).double().cpu().split(self.sizes)
        confusion = confusion.reshape(self.num_classes, self.num_classes)
        seen = max(float(confusion.sum()), 1.0)
        value = {subset: float(count) / seen for subset, count in zip(self.subsets, subsets)}
        return {
            "accuracy": float(confusion.trace()) / seen,
            "loss": float(loss) / seen,
            "macro_f1": macro_f1_of_confusion(confusion),
            "modality_accuracy": {m: float(c) / seen for m, c in zip(self.modalities, modality)},
            **imbalance_from(value, self.modalities, self.modalities),
        }
