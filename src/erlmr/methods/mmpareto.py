"""MMPareto: per encoder, combine the multimodal and unimodal gradients with Pareto weights on conflict.

Wei, Hu. "MMPareto: Boosting Multimodal Learning with Innocent Unimodal Assistance". ICML 2024.
Official code: github.com/GeWu-Lab/MMPareto_ICML2024 (``code/MMPareto.py``; defaults below follow it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.model import MultiModalModel
from ..nn.pareto import min_norm_weights
from ..options import CheckedOptions, ranged, uniform
from .base import METHODS, Method, MethodContext, StepResult

if TYPE_CHECKING:
    from ..training.step import StepContext


@dataclass
class MMParetoOptions(CheckedOptions):
    #: every encoder gradient is multiplied by this after combination (hard-coded 1.5 in the official code)
    gamma: float = ranged(1.5, gt=0, search=uniform(1.0, 2.0))


def pareto_weights(multimodal: torch.Tensor, unimodal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (w_multimodal, w_unimodal) for one encoder's two flattened gradients, and their cosine.

    Equal weights when the gradients agree (cosine > 0); otherwise the min-norm point of their convex
    hull (MGDA), which gives a direction that does not increase either loss.
    """
    cosine = F.cosine_similarity(multimodal, unimodal, dim=0)
    if cosine > 0:
        return torch.full((2,), 0.5, device=multimodal.device), cosine
    return min_norm_weights(torch.stack([multimodal, unimodal])).to(multimodal.device), cosine


def combine_gradients(
    multimodal: Sequence[torch.Tensor], unimodal: Sequence[torch.Tensor], weights: torch.Tensor, gamma: float
) -> tuple[torch.Tensor, ...]:
    """Per tensor: ``g = 2(w₀ g_mm + w₁ g_u)``, scaled up to the norm of ``g_mm + g_u`` if smaller, times γ."""
    combined = torch._foreach_mul(list(multimodal), 2 * weights[0])
    torch._foreach_add_(combined, torch._foreach_mul(list(unimodal), 2 * weights[1]))
    plain_norms = torch.stack(torch._foreach_norm(torch._foreach_add(list(multimodal), list(unimodal))))
    combined_norms = torch.stack(torch._foreach_norm(combined))
    scales = (plain_norms / combined_norms.clamp_min(1e-12)).clamp_min(1.0) * gamma
    torch._foreach_mul_(combined, list(scales.unbind()))
    return combined


@METHODS.register(
    "mmpareto",
    "MMPareto: multimodal vs unimodal gradients per encoder, min-norm weights on conflict (Wei & Hu, ICML 2024)",
)
class MMPareto(Method):
    """Loss ``CE(fused) + Σ_m CE(head_m(z_m))``; each encoder's gradient is re-weighted between its two parts.

    Unimodal heads: separate ``Linear(d_m, C)`` per modality, owned by the method as ``heads``, as
    in the official code (not the fusion head's per-modality logits, so the unimodal losses do not train
    the fusion head). The model's own per-modality logits are still what ``predict`` reports.

    One forward pass; two backward passes through its graph (``torch.autograd.grad`` of the multimodal
    loss and of the summed unimodal losses). Encoder m's parameters only receive the unimodal gradient
    of their own modality, so per encoder: cosine of the flattened multimodal and unimodal gradients;
    weights 0.5/0.5 if positive, else min-norm weights (:func:`erlmr.nn.pareto.min_norm_weights`); then
    :func:`combine_gradients`. Heads and parameters shared by all modalities (the Euler representation)
    get the plain summed gradient. Differences from the official code: two backward passes instead of
    four, and every gradient is averaged over ranks before it is combined.
    """

    Options = MMParetoOptions

    def __init__(self, model: MultiModalModel, options: MMParetoOptions, context: MethodContext):
        super().__init__(model, options, context)
        self.heads = nn.ModuleDict(
            {m: nn.Linear(d, context.num_classes) for m, d in zip(model.modalities, model.head.in_features)}
        )
        self.last_weights = {m: torch.full((2,), 0.5) for m in context.modalities}

    def parameter_order(self, model: MultiModalModel) -> tuple[list[nn.Parameter], dict[str, slice]]:
        """Every trainable parameter, encoder by encoder first (each encoder's gradients one slice)."""
        encoder_params = {m: [p for p in model.encoders[m].parameters() if p.requires_grad] for m in model.modalities}
        encoder_ids = {id(p) for params in encoder_params.values() for p in params}
        params: list[nn.Parameter] = []
        slices: dict[str, slice] = {}
        for m, group in encoder_params.items():
            slices[m] = slice(len(params), len(params) + len(group))
            params += group
        rest = [*model.parameters(), *self.heads.parameters()]
        return params + [p for p in rest if p.requires_grad and id(p) not in encoder_ids], slices

    def training_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        output = model(inputs)
        multimodal_loss = F.cross_entropy(output.logits, labels)
        unimodal_losses = [F.cross_entropy(self.heads[m](output.features[m]), labels) for m in model.modalities]
        unimodal_loss = torch.stack(unimodal_losses).sum()
        params, slices = self.parameter_order(model)
        grads_mm, grads_uni = step.gradients([multimodal_loss, unimodal_loss], params)
        new_grads = list(torch._foreach_add(grads_mm, grads_uni))
        logs = {}
        for m, part in slices.items():
            if part.start == part.stop:  # a frozen encoder
                continue
            weights, cosine = self.encoder_weights(grads_mm[part], grads_uni[part])
            new_grads[part] = combine_gradients(grads_mm[part], grads_uni[part], weights, self.options.gamma)
            self.last_weights[m] = weights.detach().cpu()
            logs[f"mmpareto_cosine_{m}"] = cosine.detach()
            logs[f"mmpareto_weight_multimodal_{m}"] = weights[0].detach()
        step.add_gradients(params, new_grads)
        return StepResult((multimodal_loss + unimodal_loss).detach(), output, logs)

    @staticmethod
    def encoder_weights(
        multimodal: list[torch.Tensor], unimodal: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pareto weights from one encoder's (globally averaged) gradients."""
        flat = torch.stack(
            [torch.cat(list(map(torch.flatten, multimodal))), torch.cat(list(map(torch.flatten, unimodal)))]
        )
        return pareto_weights(flat[0], flat[1])
