"""UME: uni-modal ensemble: each modality trained alone with its own head, predictions averaged.

Du, Teng, Li, Liu, Yuan, Wang, Yuan, Zhao. "On Uni-Modal Feature Learning in Supervised Multi-Modal
Learning". ICML 2023 (arXiv 2305.01233). No official code was released (none found by repository,
string or page search), and BalanceBenchmark (github.com/GeWu-Lab/BalanceBenchmark @ 4c1482f) has no
UME; this follows the paper's description of the ensemble.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Collection, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..encoders.base import encoder_output_shape
from ..errors import ConfigError
from ..nn.model import ModelOutput, MultiModalModel, pool_positions
from .base import METHODS, Method, MethodContext, StepResult

if TYPE_CHECKING:
    from ..training.step import StepContext


def encoder_widths(model: MultiModalModel) -> list[int]:
    """Each encoder's output width (channels of a feature map, or the vector's length)."""
    return [int(encoder_output_shape(model.encoders[m])[0]) for m in model.modalities]


def refuse_joint_clipping(method: str, step: StepContext) -> None:
    """A step that trains M independent uni-modal classifiers cannot clip their gradients to one global norm."""
    if step.grad_clip > 0:
        raise ConfigError(
            f"{method} trains its uni-modal classifiers independently in one step, and optim.grad_clip would clip "
            "them together, coupling their training; set optim.grad_clip=0"
        )


@METHODS.register(
    "ume",
    "UME: uni-modal ensemble, every encoder trained alone with its own head, logits averaged (Du et al., ICML 2023)",
)
class UME(Method):
    """Each modality m is an independent classifier: its encoder, pooled over positions, then the
    method's own ``Linear(D_m, C)`` head (``heads[m]``), trained on ``CE(head_m(z_m), y)``.

    The loss is the sum over modalities of those cross-entropies; each touches only its own encoder
    and head, so one optimiser step is M independent uni-modal trainings (global-norm gradient
    clipping, ``optim.grad_clip``, would couple them and is refused). The model's fusion head (and the
    Euler representation, if configured) is never used. ``predict`` averages the present modalities'
    logits (with every modality absent: the average of the heads on zero features, a constant).

    The paper's guiding strategy, choosing UME or :class:`~erlmr.methods.umt.UMT` for a dataset from
    whether cross-modal features help, is advice on which method to run, not a training mechanism,
    and is not implemented. Extra cost per step: none beyond joint training (M small heads replace
    the fusion head; the Euler map, if any, is skipped).
    """

    def __init__(self, model: MultiModalModel, options: object, context: MethodContext):
        super().__init__(model, options, context)
        self.widths = encoder_widths(model)
        self.heads = nn.ModuleList(nn.Linear(width, context.num_classes) for width in self.widths)

    def modality_logits(self, model: MultiModalModel, encoded: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each encoded modality's logits from its own head."""
        return {m: self.heads[i](pool_positions(encoded[m])) for i, m in enumerate(model.modalities) if m in encoded}

    def ensemble(self, model: MultiModalModel, encoded: Mapping[str, torch.Tensor], batch: int) -> ModelOutput:
        logits = self.modality_logits(model, encoded)
        if logits:
            fused = torch.stack(list(logits.values())).mean(0)
        else:  # every modality absent: the heads on zero features
            reference = next(self.heads.parameters())
            fused = torch.stack([head(reference.new_zeros(batch, w)) for head, w in zip(self.heads, self.widths)]).mean(
                0
            )
        features = {m: pool_positions(x) for m, x in encoded.items()}
        return ModelOutput(logits=fused, modality_logits=logits, features=features, encoded=dict(encoded))

    def training_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        refuse_joint_clipping("ume", step)
        encoded, batch = model.encode(inputs)
        output = self.ensemble(model, encoded, batch)
        losses = {m: F.cross_entropy(x, labels) for m, x in output.modality_logits.items()}
        loss = torch.stack(list(losses.values())).sum()
        step.backward(loss)
        return StepResult(loss.detach(), output, {f"ume_loss_{m}": x.detach() for m, x in losses.items()})

    def predict(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], absent: Collection[str] = ()
    ) -> ModelOutput:
        encoded, batch = model.encode(inputs, absent)
        return self.ensemble(model, encoded, batch)
