"""PMR: prototypical modal rebalance.

Fan, Xu, Wang, Wang, Guo. "PMR: Prototypical Modal Rebalance for Multimodal Learning". CVPR 2023.
Official code: github.com/fanyunfeng-bit/Modal-Imbalance-PMR (``main_Prototype_grad.py``, ``bash.sh``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping

import torch
import torch.nn.functional as F

from ..data.base import stratified_split
from ..errors import ConfigError
from ..nn.model import MultiModalModel
from ..options import log_uniform, ranged
from ..parallel import all_reduce_sum
from .base import METHODS, Method, MethodContext, StepResult, require_splits
from .scores import WindowOptions, in_window, mean_of_others, true_class_scores

if TYPE_CHECKING:
    from ..training.step import StepContext

Batch = tuple[Mapping[str, torch.Tensor], torch.Tensor]


@dataclass
class PMROptions(WindowOptions):
    alpha: float = ranged(2.0, ge=0, search=log_uniform(0.2, 5.0))
    momentum: float = ranged(0.0, ge=0, lt=1)
    modulation_end: int = ranged(70, ge=0)
    prototype_fraction: float = ranged(0.1, gt=0, le=1)
    squared_distance: bool = False


@METHODS.register(
    "pmr", "PMR: prototype cross-entropy on the modality behind by prototype score (Fan et al., CVPR 2023)"
)
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
    # Buffers (add_state), typed: nn.Module types an attribute it does not know as a tensor or a module.
    has_prototypes: torch.Tensor

    def __init__(self, model: MultiModalModel, options: PMROptions, context: MethodContext):
        super().__init__(model, options, context)
        self.modalities = list(model.modalities)
        for i, width in enumerate(model.head.in_features):
            self.add_state(f"prototype_{i}", torch.zeros(context.num_classes, width))
        self.add_state("has_prototypes", torch.zeros((), dtype=torch.bool))
        self.seed = torch.initial_seed()
        self.ratios = torch.ones(len(self.modalities))

    @property
    def prototypes(self) -> list[torch.Tensor]:
        return [getattr(self, f"prototype_{i}") for i in range(len(self.modalities))]

    def on_epoch_start(self, model: MultiModalModel, epoch: int) -> None:
        super().on_epoch_start(model, epoch)
        train = require_splits("pmr", self.context).train
        _, sample = stratified_split(train.labels.numpy(), self.options.prototype_fraction, self.seed + epoch)
        self.update_prototypes(model, train.subset(sample).batches(self.context.batch_size, self.context.device))

    @torch.no_grad()
    def update_prototypes(self, model: MultiModalModel, batches: Iterable[Batch]) -> None:
        """Class means of each modality's features over ``batches`` (eval mode), blended with momentum."""
        was_training = model.training
        model.eval()
        num_classes = self.context.num_classes
        sums: list[torch.Tensor] | None = None
        counts: torch.Tensor | None = None
        for inputs, labels in batches:
            features = model(inputs).features
            if sums is None or counts is None:  # both are set together, at the first batch
                sums = [features[m].new_zeros(num_classes, features[m].shape[1]) for m in self.modalities]
                counts = labels.new_zeros(num_classes, dtype=features[self.modalities[0]].dtype)
            for total, m in zip(sums, self.modalities):
                total.index_add_(0, labels, features[m])
            counts += torch.bincount(labels, minlength=num_classes).to(counts.dtype)
        model.train(was_training)
        if sums is None or counts is None:
            raise ConfigError("method 'pmr' got no samples to compute prototypes from")
        sums = [all_reduce_sum(s) for s in sums]
        counts = all_reduce_sum(counts)
        seen = (counts > 0).unsqueeze(1)
        means = [s / counts.clamp(min=1).unsqueeze(1) for s in sums]
        momentum = 0.0 if not self.has_prototypes else self.options.momentum
        for new, old in zip(means, self.prototypes):
            old.copy_(torch.where(seen, (1 - momentum) * new + momentum * old, old) if self.has_prototypes else new)
        self.has_prototypes.fill_(True)

    def prototype_logits(self, features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        distance = torch.cdist(features, prototypes)
        return -(distance**2 if self.options.squared_distance else distance)

    def training_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        output = model(inputs)
        loss = F.cross_entropy(output.logits, labels)
        logs = {}
        o = self.options
        if self.has_prototypes and in_window(self.epoch, o.modulation_start, o.modulation_end):
            sims = [self.prototype_logits(output.features[m], p) for m, p in zip(self.modalities, self.prototypes)]
            scores = true_class_scores(sims, labels)
            self.ratios = scores / mean_of_others(scores)
            prototype_ce = torch.stack([F.cross_entropy(s, labels) for s in sims])
            loss = loss + o.alpha * (prototype_ce * (self.ratios < 1)).sum()
            logs.update({f"pmr_ratio_{m}": r for m, r in zip(self.modalities, self.ratios)})
        step.backward(loss)
        return StepResult(loss.detach(), output, logs)
