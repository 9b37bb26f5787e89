"""PMR: prototypical modal rebalance.

Fan, Xu, Wang, Wang, Guo. "PMR: Prototypical Modal Rebalance for Multimodal Learning". CVPR 2023.
Official code: github.com/fanyunfeng-bit/Modal-Imbalance-PMR (``main_Prototype_grad.py``, ``bash.sh``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
import torch.nn.functional as F

from ..data.base import Split, stratified_split
from ..training.distributed import all_reduce_sum
from ..errors import ConfigError
from ..nn.model import MultiModalModel
from ..options import CheckedOptions, log_uniform, ranged
from .base import METHODS, Method, MethodContext, StepResult
from .scores import check_window, in_window, mean_of_others, true_class_scores

Batch = tuple[Mapping[str, torch.Tensor], torch.Tensor]


@dataclass
class PMROptions(CheckedOptions):
    alpha: float = ranged(2.0, ge=0, search=log_uniform(0.2, 5.0))
    momentum: float = 0.0
    modulation_start: int = 0
    modulation_end: int = 70
    prototype_fraction: float = 0.1
    squared_distance: bool = False


@METHODS.register("pmr", "PMR: prototype cross-entropy on the modality behind by prototype score (Fan et al., CVPR 2023)")
class PMR(Method):
    """Class prototypes per modality; the slow modality is pulled towards its prototypes.

    Prototypes ``c_{m,k}`` are class means of the fusion-head input features ``output.features[m]``,
    computed in eval mode without gradients at the start of every epoch from a class-stratified
    ``prototype_fraction`` of the training split (official: the first tenth of the shuffled train
    loader's batches), then ``c ← (1 − momentum)·c_new + momentum·c_old``. A class missing from the
    sample keeps its previous prototype instead of becoming NaN.

    Each step: prototype logits ``sim_m = −‖z_m − c_{m,k}‖`` (``torch.cdist``; squared with
    ``squared_distance``), prototype scores ``s_m = Σ_i softmax(sim_m)_i[y_i]``, ratio
    ``ρ_m = s_m / mean_{j≠m} s_j``, and loss ``CE(fused) + α·Σ_{m: ρ_m < 1} CE(sim_m, y)``. For two
    modalities that is the official rule exactly: the modality behind gets ``α·CE``, none at a tie.
    Prototypes are constants, so the prototype loss trains only the slow modality's encoder.

    Defaults follow the commands of the official ``bash.sh`` (α = 2, momentum 0, window epochs 0–70),
    not the argparse defaults (α = 1, momentum 0.2). The official code uses the plain (unsquared)
    Euclidean distance; the paper's prototype-entropy regulariser (PER) is not in the released code
    (its script is missing) and is not implemented here.
    """

    Options = PMROptions

    def __init__(self, model: MultiModalModel, options: PMROptions, context: MethodContext):
        super().__init__(model, options, context)
        if not 0 <= options.momentum < 1:
            raise ConfigError(f"method 'pmr': momentum must be in [0, 1), got {options.momentum}")
        if not 0 < options.prototype_fraction <= 1:
            raise ConfigError(f"method 'pmr': prototype_fraction must be in (0, 1], got {options.prototype_fraction}")
        check_window("pmr", options.modulation_start, options.modulation_end)
        self.modalities = list(model.modalities)
        self.prototypes: list[torch.Tensor] | None = None
        self.seed = torch.initial_seed()
        self.ratios = torch.ones(len(self.modalities))

    def on_epoch_start(self, model: MultiModalModel, epoch: int) -> None:
        super().on_epoch_start(model, epoch)
        if self.context.splits is None:
            raise ConfigError("method 'pmr' computes prototypes from the training split; MethodContext.splits is missing")
        train = self.context.splits.train
        _, sample = stratified_split(train.labels.numpy(), self.options.prototype_fraction, self.seed + epoch)
        self.update_prototypes(model, _batches(train.subset(sample), self.context.batch_size))

    @torch.no_grad()
    def update_prototypes(self, model: MultiModalModel, batches: Iterable[Batch]) -> None:
        """Class means of each modality's features over ``batches`` (eval mode), blended with momentum."""
        was_training = model.training
        model.eval()
        num_classes = self.context.num_classes
        sums, counts = None, None
        for inputs, labels in batches:
            inputs = {m: x.to(self.context.device) for m, x in inputs.items()}
            labels = labels.to(self.context.device)
            features = model(inputs).features
            if sums is None:
                sums = [features[m].new_zeros(num_classes, features[m].shape[1]) for m in self.modalities]
                counts = labels.new_zeros(num_classes, dtype=features[self.modalities[0]].dtype)
            for total, m in zip(sums, self.modalities):
                total.index_add_(0, labels, features[m])
            counts += torch.bincount(labels, minlength=num_classes).to(counts.dtype)
        model.train(was_training)
        if sums is None:
            raise ConfigError("method 'pmr' got no samples to compute prototypes from")
        sums = [all_reduce_sum(s) for s in sums]
        counts = all_reduce_sum(counts)
        seen = (counts > 0).unsqueeze(1)
        means = [s / counts.clamp(min=1).unsqueeze(1) for s in sums]
        if self.prototypes is None:
            self.prototypes = means
            return
        m = self.options.momentum
        self.prototypes = [torch.where(seen, (1 - m) * new + m * old, old) for new, old in zip(means, self.prototypes)]

    def prototype_logits(self, features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        distance = torch.cdist(features, prototypes)
        return -(distance**2 if self.options.squared_distance else distance)

    def training_step(self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor) -> StepResult:
        output = model(inputs)
        loss = F.cross_entropy(output.logits, labels)
        logs = {}
        o = self.options
        if self.prototypes is not None and in_window(self.epoch, o.modulation_start, o.modulation_end):
            sims = [self.prototype_logits(output.features[m], p) for m, p in zip(self.modalities, self.prototypes)]
            scores = true_class_scores(sims, labels)
            self.ratios = scores / mean_of_others(scores)
            prototype_ce = torch.stack([F.cross_entropy(s, labels) for s in sims])
            loss = loss + o.alpha * (prototype_ce * (self.ratios < 1)).sum()
            logs.update({f"pmr_ratio_{m}": r for m, r in zip(self.modalities, self.ratios)})
        loss.backward()
        return StepResult(loss.detach(), output, logs)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "prototypes": self.prototypes}

    def load_state_dict(self, state: Mapping) -> None:
        super().load_state_dict(state)
        self.prototypes = state.get("prototypes", self.prototypes)


def _batches(split: Split, batch_size: int) -> Iterable[Batch]:
    for start in range(0, len(split), batch_size):
        yield split.__getitems__(list(range(start, min(start + batch_size, len(split)))))
