"""MLA: alternating unimodal updates through one shared head with orthogonal gradient projection.

Zhang, Yoon, Bansal, Yao. "Multimodal Representation Learning by Alternating Unimodal Adaptation".
CVPR 2024. Official code: github.com/Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation
(defaults below follow it; see the class docstring for where this implementation differs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Collection, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.model import ModelOutput, MultiModalModel
from ..options import CheckedOptions, ranged
from ..parallel import all_reduce_mean
from .base import METHODS, Method, MethodContext, StepResult, equal_feature_width

if TYPE_CHECKING:
    from ..training.step import StepContext


@dataclass
class MLAOptions(CheckedOptions):
    #: project the shared head's gradient (the paper's gradient modification); False = plain alternation
    project: bool = True
    #: base of the projection's regulariser α_t = alpha^(1 + b/B) at batch b of B in an epoch
    alpha: float = ranged(0.1, gt=0, lt=1)
    #: test-time fusion weighted per sample by each modality's prediction entropy (the paper's dynamic
    #: fusion); False, the official default, averages the modalities' logits with equal weights 1/M
    entropy_fusion: bool = False


def update_projection(projection: torch.Tensor, mean_feature: torch.Tensor, alpha: float) -> torch.Tensor:
    """One recursive-least-squares step of the orthogonal projector (OWM, Zeng et al. 2019), normalised.

    With ``r`` the (d,) batch-mean feature: ``k = P r``, ``P ← P − k kᵀ / (α + r·k)``, ``P ← P / ‖P‖_F``.
    Afterwards ``P r`` is small, so a gradient right-multiplied by ``Pᵀ`` barely changes the head's
    response to the features it has already fitted.
    """
    k = projection @ mean_feature
    updated = projection - torch.outer(k, k) / (alpha + mean_feature @ k)
    return updated / updated.norm()


def entropy_fusion(logits: list[torch.Tensor]) -> torch.Tensor:
    """Per-sample ``Σ_m w_m·logits_m`` with ``w_m ∝ exp(H_max − H_m)``, H_m the entropy of softmax(logits_m)."""
    stacked = torch.stack(logits)
    log_p = stacked.log_softmax(dim=2)
    entropy = -(log_p.exp() * log_p).sum(dim=2)
    weights = torch.softmax(-entropy, dim=0)
    return (weights.unsqueeze(2) * stacked).sum(dim=0)


@METHODS.register(
    "mla", "MLA: alternating unimodal steps through a shared, gradient-projected head (Zhang et al., CVPR 2024)"
)
class MLA(Method):
    """Each batch takes one optimiser step per modality, in order, on ``CE(head(z_m), y)``.

    ``head`` is one ``Linear(d, C)`` shared by all modalities, owned by the method as ``head`` (the
    fusion head of the model is unused), so every modality's feature width d must be the same. Before
    every step but the very first, the projector P (d×d, shared by all modalities, kept across batches
    and epochs, started at I) is updated with the batch-mean feature of the modality about to step, and
    the head weight's gradient is *replaced* by ``grad·Pᵀ``. At test time the modalities' logits are
    averaged with equal weights (the official default, 0.5/0.5 for two modalities), or with
    ``entropy_fusion`` fused per sample by entropy (:func:`entropy_fusion`, the paper's dynamic fusion,
    behind a flag in the official code).

    Differences from the official code: the projection is applied (the official hook looks for a
    parameter named ``module.weight`` that the bare ``nn.Linear`` does not have, so it never runs; the
    BalanceBenchmark port adds the projected gradient to the raw one instead of replacing it); the RLS
    denominator is the scalar ``α + r·k`` of OWM (the dead official line divides element-wise by the
    outer product ``k rᵀ``); entropy weights are per sample (the official code takes a softmax over the
    batch axis and so gives one weight per modality per batch); each modality's features are computed
    just before its step, so that parameters shared between modalities (the Euler representation) are
    never modified between a forward and its backward. Extra cost: M optimiser steps per batch and a
    d×d matrix update per step.
    """

    Options = MLAOptions
    # Buffers (add_state), typed: nn.Module types an attribute it does not know as a tensor or a module.
    projection: torch.Tensor
    updates: torch.Tensor

    def __init__(self, model: MultiModalModel, options: MLAOptions, context: MethodContext):
        super().__init__(model, options, context)
        width = equal_feature_width(model, "mla shares one head across modalities, so their feature widths must match")
        self.head = nn.Linear(width, context.num_classes)
        self.add_state("projection", torch.eye(width))
        self.add_state("updates", torch.zeros((), dtype=torch.long))

    def training_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        outputs, losses = {}, {}
        for m in model.modalities:
            outputs[m] = model({m: inputs[m]})
            feature = outputs[m].features[m]
            loss = F.cross_entropy(self.head(feature), labels)
            step.backward(loss)
            step.synchronize()
            if self.options.project and self.updates > 0:
                self.project_head_gradient(feature.detach(), step)
            step.optimizer_step()
            self.updates += 1
            losses[m] = loss.detach()
        with torch.no_grad():
            logits = [self.head(outputs[m].features[m]) for m in model.modalities]
        output = ModelOutput(
            logits=self.fuse(logits),
            modality_logits=dict(zip(model.modalities, logits)),
            features={m: o.features[m].detach() for m, o in outputs.items()},
            encoded={m: o.encoded[m].detach() for m, o in outputs.items()},
        )
        logs = {f"mla_loss_{m}": loss for m, loss in losses.items()}
        return StepResult(torch.stack(list(losses.values())).mean(), output, logs)

    def project_head_gradient(self, feature: torch.Tensor, step: StepContext) -> None:
        """Update P with this batch's mean feature, then replace the head weight's gradient by ``grad·Pᵀ``."""
        alpha = self.options.alpha ** (1 + min(step.index / step.steps_per_epoch, 1.0))
        mean_feature = all_reduce_mean(feature.mean(dim=0)).to(self.projection.dtype)
        self.projection.copy_(update_projection(self.projection, mean_feature, alpha))
        weight = self.head.weight
        assert weight.grad is not None, "the head's gradient is projected after its backward pass"
        weight.grad = weight.grad @ self.projection.T

    def fuse(self, logits: list[torch.Tensor]) -> torch.Tensor:
        return entropy_fusion(logits) if self.options.entropy_fusion else torch.stack(logits).mean(dim=0)

    def predict(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], absent: Collection[str] = ()
    ) -> ModelOutput:
        output = model(inputs, absent=absent)
        present = [m for m in model.modalities if m in output.encoded]
        logits = {m: self.head(output.features[m]) for m in present}
        if not logits:  # every modality absent: the head on zero features, a constant prediction
            zeros = next(iter(output.features.values()))
            return dataclasses.replace(output, logits=self.head(zeros), modality_logits={})
        return dataclasses.replace(output, logits=self.fuse(list(logits.values())), modality_logits=logits)
