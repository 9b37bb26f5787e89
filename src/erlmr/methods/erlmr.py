"""ERL-MR: Euler representation + MMC loss + Pareto weighting of fusion CE against the MMC loss.

Han, Cai, Guo, Peng. "ERL-MR: Harnessing the Power of Euler Feature Representations for Balanced
Multi-modal Learning". ACM Multimedia 2024. doi:10.1145/3664647.3681215. Authors' code:
github.com/Weixiang-Han/ERL-MR-Harnessing-the-Power-of-Euler-Feature-Representations-for-Balanced-Multi-modal-Learning
(defaults below follow it; docs/fidelity.md lists every deviation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..losses import COSINE_AXES, MMCLoss
from ..model import MultiModalModel
from ..options import CheckedOptions, one_of, ranged
from ..pareto import NORMALIZATIONS, min_norm_weights
from .base import METHODS, Method, MethodContext, StepResult

PARETO_MODES = ("params", "features")
PARETO_TARGETS = ("mmc", "authors")


@dataclass
class ERLMROptions(CheckedOptions):
    phase_weight: float = ranged(1.0, ge=0)
    modality_ce_weight: float = ranged(1.0, ge=0)
    cosine: str = one_of("sample", COSINE_AXES)
    pareto: bool = True
    pareto_mode: str = one_of("params", PARETO_MODES)
    pareto_target: str = one_of("mmc", PARETO_TARGETS)
    normalization: str = one_of("loss+", NORMALIZATIONS)
    weight_floor: float = ranged(0.001, ge=0, lt=0.5)
    fusion_weight: float = ranged(1.0, ge=0)
    mmc_weight: float = ranged(1.0, ge=0)


@METHODS.register("erlmr", "ERL-MR: Euler features, MMC loss, Pareto weights of fusion CE vs MMC (Han et al., MM 2024)")
class ERLMR(Method):
    """One forward pass; the fusion CE and the MMC loss are combined with min-norm (MGDA) weights.

    ``pareto_mode="params"`` computes both losses' gradients on every parameter (two backward passes
    through the one graph) and uses the parts on the shared parameters (encoders, magnitudes, shared
    projection) to solve for the weights, then writes the weighted sum as the gradient.
    ``pareto_mode="features"`` is the MGDA upper bound of Sener & Koltun (2018): the weights come from
    the gradients with respect to the modality features, which only need a backward pass through the
    head, followed by one ordinary backward pass of the weighted loss. With ``pareto=False`` the loss is
    ``fusion_weight·CE + mmc_weight·MMC``.

    ``pareto_target`` says whose gradient the weights are solved against: ``"mmc"`` (the MMC loss that
    is optimised, as the paper describes) or ``"authors"`` (twice the phase term alone, as the authors'
    code does; the weights still multiply the full MMC loss).
    """

    Options = ERLMROptions
    uses_euler = True

    def __init__(self, model: MultiModalModel, options: ERLMROptions, context: MethodContext):
        super().__init__(model, options, context)
        if model.euler is None:
            raise ConfigError("method 'erlmr' needs the Euler representation; do not set model.euler: false")
        self.mmc = MMCLoss(options.phase_weight, options.modality_ce_weight, options.cosine)
        self.last_weights = torch.tensor([options.fusion_weight, options.mmc_weight])

    def training_step(self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor) -> StepResult:
        output = model(inputs)
        order = model.modalities
        fusion_ce = F.cross_entropy(output.logits, labels)
        terms = self.mmc.terms([output.phases[m] for m in order], [output.modality_logits[m] for m in order], labels)
        losses = [fusion_ce, terms.total]
        targets = losses if self.options.pareto_target == "mmc" else [fusion_ce, 2 * terms.phase]
        if not self.options.pareto:
            weights = self.last_weights.to(fusion_ce.device)
            (weights[0] * fusion_ce + weights[1] * terms.total).backward()
        elif self.options.pareto_mode == "params":
            weights = self._weighted_backward_on_params(model, losses, targets)
        else:
            weights = self._weighted_backward_on_features(model, losses, targets, [output.features[m] for m in order])
        self.last_weights = weights.detach().cpu()
        loss = (weights[0] * fusion_ce + weights[1] * terms.total).detach()
        logs = {
            "pareto_weight_fusion": weights[0].detach(),
            "pareto_weight_mmc": weights[1].detach(),
            "phase_cosine": terms.phase_cosine.detach(),
            "fusion_ce": fusion_ce.detach(),
            "mmc_loss": terms.total.detach(),
        }
        return StepResult(loss, output, logs)

    def _solve(self, grads: Sequence[torch.Tensor], losses: Sequence[torch.Tensor]) -> torch.Tensor:
        weights = min_norm_weights(grads, torch.stack([l.detach() for l in losses]), self.options.normalization)
        floor = self.options.weight_floor
        return weights.clamp(floor, 1 - floor).to(losses[0].device)

    def _weighted_backward_on_params(
        self, model: MultiModalModel, losses: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        params = [p for p in model.parameters() if p.requires_grad]
        shared_ids = {id(p) for p in model.shared_parameters()}
        grads = [torch.autograd.grad(loss, params, retain_graph=True, materialize_grads=True) for loss in losses]
        solve_grads = grads if targets is losses else [
            torch.autograd.grad(t, params, retain_graph=True, materialize_grads=True) for t in targets
        ]
        flat = [torch.cat([g.flatten() for g, p in zip(per_loss, params) if id(p) in shared_ids]) for per_loss in solve_grads]
        weights = self._solve(flat, targets)
        combined = torch._foreach_mul(list(grads[0]), weights[0])
        torch._foreach_add_(combined, torch._foreach_mul(list(grads[1]), weights[1]))
        for p, g in zip(params, combined):
            p.grad = g if p.grad is None else p.grad + g
        return weights

    def _weighted_backward_on_features(
        self,
        model: MultiModalModel,
        losses: Sequence[torch.Tensor],
        targets: Sequence[torch.Tensor],
        features: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        grads = [torch.cat([g.flatten() for g in torch.autograd.grad(t, features, retain_graph=True)]) for t in targets]
        weights = self._solve(grads, targets)
        (weights[0] * losses[0] + weights[1] * losses[1]).backward()
        return weights

    def state_dict(self) -> dict:
        return {**super().state_dict(), "last_weights": self.last_weights}

    def load_state_dict(self, state: Mapping) -> None:
        super().load_state_dict(state)
        self.last_weights = state.get("last_weights", self.last_weights)
