"""Classification metrics computed from accumulated predictions."""
from __future__ import annotations

import torch


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    return float((predictions == labels).float().mean()) if len(labels) else 0.0


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def macro_f1(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in labels or predictions."""
    matrix = confusion_matrix(predictions, labels, num_classes).double()
    true_positive = matrix.diag()
    predicted = matrix.sum(0)
    actual = matrix.sum(1)
    present = (predicted + actual) > 0
    f1 = 2 * true_positive / (predicted + actual).clamp_min(1)
    return float(f1[present].mean()) if present.any() else 0.0
