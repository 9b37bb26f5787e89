"""Modality imbalance of a trained model: Shapley contributions, imbalance degree, missing-modality accuracy.

A modality "outside a subset" is *missing* exactly as ``model(inputs, absent=...)`` treats it: its
fusion-head input is all zeros (see :class:`erlmr.nn.model.MultiModalModel`). The value of a subset ``S``
of modalities is the fused accuracy with every modality outside ``S`` missing; ``v(∅)`` is the accuracy
of the head fed zeros for every modality (a constant prediction). docs/metrics.md gives the formulas.
"""
from __future__ import annotations

import itertools
from typing import Any, Collection, Sequence

import torch
import torch.nn.functional as F

from ..data import Split
from ..methods import Method
from ..nn.model import MultiModalModel
from .metrics import accuracy, imbalance_degree, macro_f1, shapley_values


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
    fused, per_modality, labels_all = [], {m: [] for m in model.modalities if m not in absent}, []
    total_loss = 0.0
    for inputs, labels in split.batches(batch_size, device):
        output = method.predict(model, inputs, absent)
        total_loss += float(F.cross_entropy(output.logits, labels, reduction="sum"))
        fused.append(output.logits.argmax(1).cpu())
        for m in per_modality:
            per_modality[m].append(output.modality_logits[m].argmax(1).cpu())
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


@torch.no_grad()
def subset_accuracies(
    model: MultiModalModel,
    method: Method,
    split: Split,
    batch_size: int,
    device: torch.device,
    absent: Collection[str] = (),
) -> dict[frozenset[str], float]:
    """Fused accuracy ``v(S)`` on ``split`` for every subset ``S`` of the modalities not in ``absent``:
    ``method.predict`` with every modality outside S absent (for S = ∅ the head on zeros).

    Each encoder runs once per batch (:meth:`MultiModalModel.reusing_encodings`); only what follows
    the encoders re-runs for each of the 2^M subsets.
    """
    model.eval()
    method.eval()
    players = [m for m in model.modalities if m not in absent]
    subsets = subsets_of(players)
    correct = dict.fromkeys(subsets, 0)
    for inputs, labels in split.batches(batch_size, device):
        with model.reusing_encodings():
            for subset in subsets:
                logits = method.predict(model, inputs, [m for m in model.modalities if m not in subset]).logits
                correct[subset] += int((logits.argmax(1) == labels).sum())
    return {subset: count / max(len(split), 1) for subset, count in correct.items()}


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
    contributions = shapley_values(value, players)
    everything = frozenset(players)
    return {
        "contribution": contributions,
        "imbalance_degree": imbalance_degree(contributions),
        "missing_modality_accuracy": {m: value[everything - {m}] for m in players},
        "subset_accuracy": {subset_name(s, model.modalities): v for s, v in value.items()},
    }
