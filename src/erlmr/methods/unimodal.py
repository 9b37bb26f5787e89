"""Unimodal training: the same model trained and evaluated on one modality, the others missing.

The reference accuracy every balancing paper reports next to its multi-modal results, e.g. the
"audio-only"/"visual-only" rows of Peng et al., CVPR 2022 (github.com/GeWu-Lab/OGM-GE_CVPR2022).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Collection, Mapping

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..nn.model import ModelOutput, MultiModalModel
from .base import METHODS, Method, MethodContext, StepResult

if TYPE_CHECKING:
    from ..training.step import StepContext


@dataclass
class UnimodalOptions:
    modality: str = ""


@METHODS.register("unimodal", "train and predict from one modality (option 'modality'); the others never run")
class Unimodal(Method):
    """Cross-entropy on the fused logits of ``model(inputs, absent=others)``.

    Every other modality is passed as absent, so its encoder never runs and its fusion-head input is
    zero: the prediction is a function of the chosen modality alone, in training and at evaluation.
    The other encoders get no gradient and are never updated.
    """

    Options = UnimodalOptions
    needs_options = True

    def __init__(self, model: MultiModalModel, options: UnimodalOptions, context: MethodContext):
        super().__init__(model, options, context)
        if options.modality not in model.modalities:
            problem = "needs" if not options.modality else f"got unknown modality {options.modality!r} for"
            raise ConfigError(
                f"method 'unimodal' {problem} method.options.modality, one of {model.modalities}; "
                f"e.g. --set method.options.modality={model.modalities[0]}"
            )
        self.others = [m for m in model.modalities if m != options.modality]

    @property
    def trained_modalities(self) -> list[str]:
        return [self.options.modality]

    def training_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        output = model(inputs, absent=self.others)
        loss = F.cross_entropy(output.logits, labels)
        step.backward(loss)
        return StepResult(loss.detach(), output)

    def predict(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], absent: Collection[str] = ()
    ) -> ModelOutput:
        return model(inputs, absent=[*absent, *self.others])
