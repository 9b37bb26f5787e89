"""Classification metrics computed from accumulated predictions, and the Shapley arithmetic of modality
contributions (see docs/metrics.md)."""

from __future__ import annotations

import itertools
import math
from typing import Mapping, Sequence

import torch


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    return float((predictions == labels).float().mean()) if len(labels) else 0.0


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def macro_f1(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in labels or predictions."""
    return macro_f1_of_confusion(confusion_matrix(predictions, labels, num_classes))


def macro_f1_of_confusion(matrix: torch.Tensor) -> float:
    """:func:`macro_f1` from a confusion matrix (rows: true class, columns: predicted class)."""
    matrix = matrix.double()
    true_positive = matrix.diag()
    predicted = matrix.sum(0)
    actual = matrix.sum(1)
    present = (predicted + actual) > 0
    f1 = 2 * true_positive / (predicted + actual).clamp_min(1)
    return float(f1[present].mean()) if present.any() else 0.0


def shapley_values(value: Mapping[frozenset[str], float], players: Sequence[str]) -> dict[str, float]:
    """Exact Shapley value of every player of the game ``value`` (defined on every subset of ``players``).

    ``φ_p = Σ_{S ⊆ N∖{p}} |S|!·(n−|S|−1)!/n! · (v(S ∪ {p}) − v(S))``; the values sum to ``v(N) − v(∅)``.
    """
    n = len(players)
    contributions = {}
    for player in players:
        others = [p for p in players if p != player]
        total = 0.0
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for coalition in itertools.combinations(others, size):
                subset = frozenset(coalition)
                total += weight * (value[subset | {player}] - value[subset])
        contributions[player] = total
    return contributions


def imbalance_degree(contributions: Mapping[str, float]) -> float:
    """Mean absolute difference over all unordered pairs of modalities' contributions.

    ``2 / (M(M−1)) · Σ_{i<j} |φ_i − φ_j|``, in the unit of the contributions (accuracy); 0 when every
    modality contributes the same, ``|φ_a − φ_b|`` for two modalities.
    """
    values = list(contributions.values())
    pairs = list(itertools.combinations(values, 2))
    return sum(abs(a - b) for a, b in pairs) / len(pairs) if pairs else 0.0
