"""MMCosine: a scaled cosine classifier per modality, summed.

Xu, Wei, Hu, Xu, Wen. "MMCosine: Multi-Modal Cosine Loss Towards Balanced Audio-Visual Fine-Grained
Learning". ICASSP 2023. Official code: github.com/GeWu-Lab/MMCosine_ICASSP23 (``main_CD.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Collection, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..nn.fusion import ConcatFusion, FusionHead, FusionOutput, SumFusion
from ..nn.model import ModelOutput, MultiModalModel
from ..options import CheckedOptions, log_uniform, ranged
from .base import METHODS, Method, MethodContext, StepResult

if TYPE_CHECKING:
    from ..training.step import StepContext


@dataclass
class MMCosineOptions(CheckedOptions):
    scale: float = ranged(10.0, gt=0, search=log_uniform(2.0, 50.0))


class CosineHead(FusionHead):
    """Modality m's logits are ``s·cos(x_m, w_{m,c})`` for every class c; the fused logits are their sum.

    ``w_m`` is a (classes × D_m) weight per modality, each class row normalised on its own, no bias;
    each modality's logits lie in [−s, s]. An absent modality (zero feature) contributes zero logits.
    """

    def __init__(self, in_features: Sequence[int], num_classes: int, scale: float):
        super().__init__(in_features, num_classes)
        self.scale = scale
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(num_classes, d)) for d in self.in_features)
        for weight in self.weights:
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # nn.Linear's initialisation

    def forward(self, features: Sequence[torch.Tensor]) -> FusionOutput:
        modality_logits = [
            self.scale * F.normalize(x, dim=1) @ F.normalize(w, dim=1).T for x, w in zip(features, self.weights)
        ]
        return FusionOutput(torch.stack(modality_logits).sum(0), modality_logits)


@METHODS.register("mmcosine", "MMCosine: s·cosine logits per modality, summed (Xu et al., ICASSP 2023)")
class MMCosine(Method):
    """Plain cross-entropy on the fused logits of a :class:`CosineHead` that replaces the linear head.

    The official code keeps the concat head's weight and normalises each modality's slice of it (its
    bias is unused); a concat or sum head with its bias dropped and its per-modality weights
    normalised is the same classifier, so the method owns a cosine head of the same widths and fuses through it
    in training and prediction (the model's linear head is left unused).
    FiLM and gated heads are refused: the official code rewrites them to expose concatenated features,
    which changes what those heads are. Default s = 10 (official ``--scaling``).
    """

    Options = MMCosineOptions

    def __init__(self, model: MultiModalModel, options: MMCosineOptions, context: MethodContext):
        super().__init__(model, options, context)
        if not isinstance(model.head, (ConcatFusion, SumFusion)):
            raise ConfigError(
                f"method 'mmcosine' replaces a linear fusion head (concat or sum) by cosine classifiers; "
                f"got {type(model.head).__name__}. Use model.fusion: concat"
            )
        self.head = CosineHead(model.head.in_features, model.head.num_classes, options.scale)

    def training_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        output = model(inputs, head=self.head)
        loss = self.loss(output, labels)
        step.backward(loss)
        return StepResult(loss.detach(), output)

    def predict(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], absent: Collection[str] = ()
    ) -> ModelOutput:
        return model(inputs, absent=absent, head=self.head)
