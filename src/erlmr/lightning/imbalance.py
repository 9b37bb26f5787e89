"""The imbalance metrics of any Lightning model, logged after every validation epoch.

:class:`ImbalanceCallback` runs :func:`erlmr.diagnose` (Shapley contribution of each modality to
accuracy, the imbalance degree, the accuracy with each modality missing, each modality's own accuracy
where the model returns ``modality_logits``; docs/metrics.md) on the validation batches, or on a
dataloader of its own, and logs the numbers through ``pl_module.log``, so they reach every logger,
the progress bar and ``ModelCheckpoint(monitor=...)``.

Under DDP each rank diagnoses its shard of the batches; the subset accuracies (and per-modality
accuracies) are then averaged over the ranks, weighted by their sample counts, before the contributions
are computed, so the numbers are those of the whole validation set. The Shapley arithmetic follows
ERL-MR's evaluation (Han, Cai, Guo, Peng, ACM MM 2024, doi:10.1145/3664647.3681215).
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Mapping, Sequence

import lightning.pytorch as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device

from ..analysis.diagnose import Batch, diagnose, takes_absent
from ..analysis.evaluation import imbalance_from, subset_name, subsets_of
from ..errors import DataError

#: the report entries that are logged (the 2^M subset accuracies are not: they are what these come from)
LOGGED = (
    "accuracy",
    "loss",
    "macro_f1",
    "modality_accuracy",
    "contribution",
    "imbalance_degree",
    "missing_modality_accuracy",
)


def flat_metrics(report: Mapping[str, Any], prefix: str, suffix: str = "") -> dict[str, float]:
    """The logged entries of an imbalance report as ``{prefix}name{suffix}`` scalars; a per-modality
    entry becomes one scalar per modality, ``{prefix}contribution/audio{suffix}``."""
    flat = {}
    for key in LOGGED:
        value = report.get(key)
        if isinstance(value, Mapping):
            flat.update({f"{prefix}{key}/{m}{suffix}": float(v) for m, v in value.items()})
        elif value is not None:
            flat[f"{prefix}{key}{suffix}"] = float(value)
    return flat


class ImbalanceCallback(L.Callback):
    """Log the imbalance report of the trained model after every validation epoch (not the sanity check).

    * ``dataloader``: the batches to diagnose, each ``(dict of modality tensors, labels)``; default: the
      trainer's validation dataloaders (as many batches as ``limit_val_batches`` lets validation see).
    * ``model``: turns the LightningModule into the callable ``diagnose`` asks, e.g.
      ``lambda module: erlmr.PositionalModel(module, ["audio", "visual"])`` for a forward that takes one
      tensor per modality; default: the module itself (its forward takes the dict).
    * ``unpack``: turns one batch into ``(inputs, labels)`` when the dataloader yields something else.
    * ``modalities``: their order (default: the keys of the first batch); ``prefix`` of the logged names.
    """

    def __init__(
        self,
        dataloader: Iterable | None = None,
        model: Callable[[L.LightningModule], Callable] | None = None,
        unpack: Callable[[Any], Batch] | None = None,
        modalities: Sequence[str] | None = None,
        prefix: str = "diagnose/",
    ):
        self.dataloader, self.model, self.unpack = dataloader, model, unpack
        self.modalities, self.prefix = modalities, prefix

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        loaders = self.loaders(trainer)
        model = pl_module if self.model is None else self.model(pl_module)
        for index, (loader, limit) in enumerate(loaders):
            batches = [self.batch(b, pl_module.device) for b in itertools.islice(loader, limit)]
            report = reduced_report(diagnose(model, batches, self.modalities), batches, takes_absent(model), trainer)
            suffix = f"/dataloader_idx_{index}" if len(loaders) > 1 else ""
            pl_module.log_dict(flat_metrics(report, self.prefix, suffix), sync_dist=True)

    def loaders(self, trainer: L.Trainer) -> list[tuple[Iterable, int | None]]:
        """The dataloaders to diagnose, each with the number of its batches validation used (None: all)."""
        if self.dataloader is not None:
            return [(self.dataloader, None)]
        loaders = trainer.val_dataloaders
        loaders = list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]
        limits = [int(n) if n != float("inf") else None for n in trainer.num_val_batches]
        return list(zip(loaders, limits))

    def batch(self, batch: Any, device: torch.device) -> Batch:
        inputs, labels = batch if self.unpack is None else self.unpack(batch)
        if not isinstance(inputs, Mapping):
            raise DataError(
                f"ImbalanceCallback needs batches of (dict of modality tensors, labels), got {type(inputs).__name__} "
                "inputs; pass unpack=lambda batch: (dict_of_tensors, labels)"
            )
        return move_data_to_device((dict(inputs), labels), device)


def reduced_report(
    report: dict[str, Any], batches: list[Batch], asked_empty: bool, trainer: L.Trainer
) -> dict[str, Any]:
    """``report`` of this rank's ``batches`` turned into the report of every rank's batches (the report
    itself in one process): subset and per-modality accuracies averaged with the ranks' sample counts as
    weights, v(∅) of a model that cannot be asked without inputs recomputed from the global class counts."""
    if trainer.world_size == 1:
        return report
    order = list(report["contribution"])
    subsets = subsets_of(order)
    labels = torch.cat([y.cpu() for _, y in batches])
    per_modality = [report["modality_accuracy"][m] for m in order if m in report["modality_accuracy"]]
    local = torch.tensor(
        [report["subset_accuracy"][subset_name(s, order)] for s in subsets] + per_modality, dtype=torch.float64
    )
    sums = trainer.strategy.reduce(
        torch.cat([local * len(labels), torch.tensor([float(len(labels))], dtype=torch.float64)]), reduce_op="sum"
    )
    means = (sums[:-1] / sums[-1].clamp_min(1)).tolist()
    value = dict(zip(subsets, means))
    if not asked_empty:
        value[frozenset()] = majority_rate(labels, trainer)
    reduced = imbalance_from(value, order, order)
    reduced["accuracy"] = value[frozenset(order)]
    reduced["modality_accuracy"] = dict(
        zip([m for m in order if m in report["modality_accuracy"]], means[len(subsets) :])
    )
    return reduced


def majority_rate(labels: torch.Tensor, trainer: L.Trainer) -> float:
    """The accuracy of always predicting the most frequent class of every rank's labels together."""
    classes = int(trainer.strategy.reduce(torch.tensor(int(labels.max()) + 1 if len(labels) else 0), reduce_op="max"))
    counts = trainer.strategy.reduce(torch.bincount(labels, minlength=classes).double(), reduce_op="sum")
    return float(counts.max() / counts.sum().clamp_min(1))
