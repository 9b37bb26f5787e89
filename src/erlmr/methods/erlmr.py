"""ERL-MR: Euler representation + MMC loss + Pareto weighting of fusion CE against the MMC loss.

Han, Cai, Guo, Peng. "ERL-MR: Harnessing the Power of Euler Feature Representations for Balanced
Multi-modal Learning". ACM Multimedia 2024. doi:10.1145/3664647.3681215. Authors' code:
github.com/Weixiang-Han/ERL-MR-Harnessing-the-Power-of-Euler-Feature-Representations-for-Balanced-Multi-modal-Learning
(defaults below follow it; docs/fidelity.md lists every deviation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..nn.balance import balanced_backward, weighted_sum
from ..nn.losses import COSINE_AXES, MMCLoss, MMCTerms
from ..nn.model import MultiModalModel
from ..nn.pareto import NORMALIZATIONS
from ..options import CheckedOptions, log_uniform, one_of, ranged
from .base import METHODS, Method, MethodContext, StepResult

if TYPE_CHECKING:
    from ..training.step import StepContext

PARETO_MODES = ("params", "features")
PARETO_TARGETS = ("mmc", "authors")


@dataclass
class ERLMROptions(CheckedOptions):
    #: the MMC loss's two weights and the Pareto normalisation are what ``erlmr tune`` searches
    phase_weight: float = ranged(1.0, ge=0, search=log_uniform(0.1, 10.0))
    modality_ce_weight: float = ranged(1.0, ge=0, search=log_uniform(0.1, 10.0))
    cosine: str = one_of("sample", COSINE_AXES)
    pareto: bool = True
    pareto_mode: str = one_of("params", PARETO_MODES)
    pareto_target: str = one_of("mmc", PARETO_TARGETS)
    normalization: str = one_of("loss+", NORMALIZATIONS, search=True)
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
    ``fusion_weight·CE + mmc_weight·MMC``. Both modes solve from the gradients of the whole batch: in a
    distributed run the Gram matrix and the losses are reduced over ranks, so every rank applies the same
    weights (docs/performance.md measures what each mode costs).

    ``pareto_target`` says whose gradient the weights are solved against: ``"mmc"`` (the MMC loss that
    is optimised, as the paper describes) or ``"authors"`` (twice the phase term alone, as the authors'
    code does; the weights still multiply the full MMC loss).
    """

    Options = ERLMROptions
    uses_euler = True
    #: the step is a function of tensors alone (train.cuda_graphs may capture it)
    cuda_graph_safe = True

    def __init__(self, model: MultiModalModel, options: ERLMROptions, context: MethodContext):
        super().__init__(model, options, context)
        if model.euler is None and options.pareto_target == "authors":
            raise ConfigError(
                "pareto_target 'authors' solves against the phase term, which needs the Euler map; "
                "drop model.euler: false or use pareto_target: mmc"
            )
        self.mmc = MMCLoss(options.phase_weight, options.modality_ce_weight, options.cosine)
        #: the weights of the last step (fixed ones with ``pareto: false``), for logging
        self.last_weights = torch.tensor([options.fusion_weight, options.mmc_weight])

    def training_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        output = model(inputs)
        order = model.modalities
        # Without the Euler map (the ablation's model.euler: false) there are no phases and no phase term.
        phases = None if output.phases is None else [output.phases[m] for m in order]
        fusion_ce, terms = self.losses(output.logits, phases, [output.modality_logits[m] for m in order], labels)
        losses = [fusion_ce, terms.total]
        targets = losses if self.options.pareto_target == "mmc" else [fusion_ce, 2 * terms.phase]
        o = self.options
        if not o.pareto:
            weights = torch.tensor([o.fusion_weight, o.mmc_weight])
            step.backward(weighted_sum(weights, losses))
        else:
            features = [output.features[m] for m in order] if o.pareto_mode == "features" else None
            weights = balanced_backward(
                losses,
                model.parameters(),
                shared=None if features else model.shared_parameters(),
                features=features,
                targets=None if targets is losses else targets,
                normalization=o.normalization,
                weight_floor=o.weight_floor,
                gradients=step,
            )
        self.last_weights = weights
        logs = {
            "pareto_weight_fusion": weights[0],
            "pareto_weight_mmc": weights[1],
            "phase_cosine": terms.phase_cosine.detach(),
            "fusion_ce": fusion_ce.detach(),
            "mmc_loss": terms.total.detach(),
        }
        return StepResult(weighted_sum(weights, losses).detach(), output, logs)

    def losses(
        self,
        logits: torch.Tensor,
        phases: list[torch.Tensor] | None,
        modality_logits: list[torch.Tensor],
        labels: torch.Tensor,
    ) -> tuple[torch.Tensor, MMCTerms]:
        """The fusion cross-entropy and the MMC loss's terms of one forward pass."""
        return F.cross_entropy(logits, labels), self.mmc.terms(phases, modality_logits, labels)

    def compile_losses(self, compile_fn: Callable) -> None:
        """Compile :meth:`losses` with ``train.compile`` (forward and backward fused with the model's)."""
        self.losses = compile_fn(self.losses)  # type: ignore[method-assign]  # the compiled losses replace the method's
