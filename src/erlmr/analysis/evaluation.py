"""Modality imbalance of a trained model: Shapley contributions, imbalance degree, missing-modality accuracy.

A modality "outside a subset" is *missing* exactly as ``model(inputs, absent=...)`` treats it: its
fusion-head input is all zeros (see :class:`erlmr.nn.model.MultiModalModel`). The value of a subset ``S``
of modalities is the fused accuracy with every modality outside ``S`` missing; ``v(∅)`` is the accuracy
of the head fed zeros for every modality (a constant prediction). docs/metrics.md gives the formulas.
"""
from __future__ import annotations

import itertools
from typing import Any, Collection, Iterator, Mapping, Sequence

import torch

from ..data import Split
from ..errors import DataError
from ..methods import Method
from ..methods.compose import ComposedMethod
from .metrics import imbalance_degree, shapley_values
from ..nn.model import MultiModalModel


def subsets_of(players: Sequence[str]) -> list[frozenset[str]]:
    """All 2^M subsets, smallest first."""
    return [frozenset(c) for size in range(len(players) + 1) for c in itertools.combinations(players, size)]


def subset_name(subset: Collection[str], order: Sequence[str]) -> str:
    return "+".join(m for m in order if m in subset) or "none"


def batches(split: Split, batch_size: int, device: torch.device) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """The split in order, one indexing operation per batch: what every evaluation iterates over."""
    for start in range(0, len(split), batch_size):
        inputs, labels = split.__getitems__(range(start, min(start + batch_size, len(split))))
        yield {m: x.to(device) for m, x in inputs.items()}, labels.to(device)


def uses_model_prediction(method: Method) -> bool:
    """True when ``method.predict`` is the plain ``model(inputs, absent)``, so encoder outputs can be reused."""
    primary = method.primary if isinstance(method, ComposedMethod) else method
    return type(primary).predict is Method.predict


def head_logits(model: MultiModalModel, encoded: Mapping[str, torch.Tensor], subset: Collection[str], batch: int) -> torch.Tensor:
    """Fused logits with only ``subset`` present, from cached encoder outputs: what ``model.forward`` computes."""
    if subset:
        features, _ = model.represent({m: encoded[m] for m in model.modalities if m in subset}, batch)
        inputs = [features[m] for m in model.modalities]
    else:
        reference = next(model.head.parameters())
        inputs = [reference.new_zeros(batch, width) for width in model.head.in_features]
    return model.head(inputs).logits


def method_logits(
    model: MultiModalModel, method: Method, inputs: Mapping[str, torch.Tensor], subset: Collection[str], everything: bool
) -> torch.Tensor:
    """``method.predict`` with only ``subset`` present. A method that then has no modality left (e.g.
    unimodal without its own) predicts like the empty set: the head fed zeros."""
    try:
        return method.predict(model, inputs, [m for m in model.modalities if m not in subset]).logits
    except DataError:
        if everything:
            raise
        return head_logits(model, {}, (), len(next(iter(inputs.values()))))


@torch.no_grad()
def subset_accuracies(
    model: MultiModalModel,
    method: Method,
    split: Split,
    batch_size: int,
    device: torch.device,
    absent: Collection[str] = (),
) -> dict[frozenset[str], float]:
    """Fused accuracy ``v(S)`` on ``split`` for every subset ``S`` of the modalities not in ``absent``.

    Each encoder runs once per batch; only the representation and the head re-run for each of the 2^M
    subsets. A method with its own ``predict`` is instead asked once per non-empty subset.
    """
    model.eval()
    players = [m for m in model.modalities if m not in absent]
    subsets = subsets_of(players)
    reuse = uses_model_prediction(method)
    correct = dict.fromkeys(subsets, 0)
    for inputs, labels in batches(split, batch_size, device):
        encoded = model.encode(inputs, players) if reuse else {}
        for subset in subsets:
            if reuse or not subset:
                logits = head_logits(model, encoded, subset, len(labels))
            else:
                logits = method_logits(model, method, inputs, subset, subset == subsets[-1])
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
