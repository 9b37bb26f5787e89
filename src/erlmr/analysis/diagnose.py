"""Is a model under-using a modality? The imbalance report for any model, in any project.

::

    report = erlmr.diagnose(model, batches)               # model(dict of modality tensors) -> logits
    report = erlmr.diagnose(PositionalModel(net, ["audio", "visual"]), batches)   # net(audio, visual)

``batches`` is any iterable of ``(inputs, labels)`` with ``inputs`` a dict of modality tensors (a
DataLoader over a dataset that yields such pairs will do). The model is asked for every subset S of the
modalities (the others left out of the dict, or, when the model takes an ``absent`` keyword, named there)
and the report holds what :mod:`erlmr.analysis.evaluation` computes for erlmr's own runs: fused accuracy,
each modality's own accuracy where the model returns per-modality logits, the Shapley contribution of
each modality to accuracy, the imbalance degree, the accuracy with each modality missing and of every
subset (docs/metrics.md). For an erlmr ``MultiModalModel`` the numbers equal the trainer's.

v(∅), the empty coalition: a model with an ``absent`` keyword is asked with every modality absent, as
erlmr's own model is (it then predicts from zero features, so a modality the model ignores contributes
exactly 0); a model without one cannot be asked without inputs, so v(∅) is then the accuracy of always
predicting the most frequent class of the batches.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from ..errors import DataError
from .evaluation import imbalance_from, subset_accuracies_of
from .metrics import accuracy

Batch = tuple[Mapping[str, torch.Tensor], torch.Tensor]


class PositionalModel(nn.Module):
    """A model whose ``forward`` takes one tensor per modality in order, made to take a dict.

    A missing modality (left out of the dict, or named in ``absent``) is given as zeros of the shape it
    had in the last batch that held it.
    """

    def __init__(self, module: nn.Module, modalities: Sequence[str]):
        super().__init__()
        self.module = module
        self.modalities = list(modalities)
        self._shapes: dict[str, tuple[tuple[int, ...], torch.dtype, torch.device]] = {}

    def forward(self, inputs: Mapping[str, torch.Tensor], absent: Sequence[str] = ()) -> Any:
        given = [m for m in self.modalities if m in inputs]
        if not given:
            raise DataError(f"no modality given; this model takes {self.modalities}")
        batch = len(inputs[given[0]])
        for m in given:
            self._shapes[m] = (tuple(inputs[m].shape[1:]), inputs[m].dtype, inputs[m].device)
        return self.module(*(self._tensor(m, inputs, absent, batch) for m in self.modalities))

    def _tensor(self, m: str, inputs: Mapping[str, torch.Tensor], absent: Sequence[str], batch: int) -> torch.Tensor:
        if m in inputs and m not in absent:
            return inputs[m]
        if m not in self._shapes:
            raise DataError(f"modality {m!r} has not been seen yet, so its missing input's shape is unknown")
        shape, dtype, device = self._shapes[m]
        return torch.zeros(batch, *shape, dtype=dtype, device=device)


@torch.no_grad()
def diagnose(
    model: Callable[..., Any], batches: Iterable[Batch], modalities: Sequence[str] | None = None
) -> dict[str, Any]:
    """The imbalance report of ``model`` over ``batches`` (see the module docstring); ``modalities``
    defaults to the keys of the first batch. An ``nn.Module`` is put in eval mode."""
    if isinstance(model, nn.Module):
        model.eval()
    data = [(dict(inputs), labels) for inputs, labels in batches]
    if not data:
        raise DataError("diagnose got no batches; give an iterable of (dict of modality tensors, labels)")
    order = list(modalities or data[0][0])
    asks_empty = takes_absent(model)

    def predict(inputs: Mapping[str, torch.Tensor], absent: Sequence[str]) -> torch.Tensor:
        if asks_empty:
            return logits_of(model(inputs, absent=list(absent)))
        return logits_of(model({m: x for m, x in inputs.items() if m not in absent}))

    value = subset_accuracies_of(predict, data, order, order, ask_empty=asks_empty)
    report = imbalance_from(value, order, order)
    report["accuracy"] = value[frozenset(order)]
    report["modality_accuracy"] = _modality_accuracy(model, data, order)
    return report


def logits_of(output: Any) -> torch.Tensor:
    """The fused logits of a model's output: a tensor, or an object / mapping with ``logits``."""
    if isinstance(output, torch.Tensor):
        return output
    logits = output.get("logits") if isinstance(output, Mapping) else getattr(output, "logits", None)
    if not isinstance(logits, torch.Tensor):
        raise DataError(
            f"the model returned a {type(output).__name__}; diagnose needs logits: a (batch, classes) tensor, "
            "or an object or dict with 'logits'"
        )
    return logits


def _modality_accuracy(model: Callable[..., Any], data: Sequence[Batch], order: Sequence[str]) -> dict[str, float]:
    """Each modality's accuracy from the per-modality logits the model returns (``modality_logits``), if any."""
    predictions: dict[str, list[torch.Tensor]] = {}
    for inputs, _ in data:
        output = model(inputs)
        per_modality = (
            output.get("modality_logits") if isinstance(output, Mapping) else getattr(output, "modality_logits", None)
        )
        if not per_modality:
            return {}
        for m in order:
            predictions.setdefault(m, []).append(per_modality[m].argmax(1).cpu())
    labels = torch.cat([y.cpu() for _, y in data])
    return {m: accuracy(torch.cat(p), labels) for m, p in predictions.items()}


def takes_absent(model: Callable[..., Any]) -> bool:
    """Whether ``model`` takes the ``absent`` keyword, so that it is asked for v(∅) itself."""
    try:
        return "absent" in inspect.signature(model.forward if isinstance(model, nn.Module) else model).parameters
    except (TypeError, ValueError):
        return False
