"""ERL-MR: Euler representation + MMC loss + Pareto weighting of fusion CE against the MMC loss.

Han, Cai, Guo, Peng. "ERL-MR: Harnessing the Power of Euler Feature Representations for Balanced
Multi-modal Learning". ACM Multimedia 2024. doi:10.1145/3664647.3681215. Authors' code:
github.com/Weixiang-Han/ERL-MR-Harnessing-the-Power-of-Euler-Feature-Representations-for-Balanced-Multi-modal-Learning
(defaults below follow it; docs/fidelity.md lists every deviation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..training.distributed import all_reduce_mean, all_reduce_sum, world_size
from ..errors import ConfigError
from ..nn.losses import COSINE_AXES, MMCLoss
from ..nn.model import MultiModalModel
from ..options import CheckedOptions, log_uniform, one_of, ranged
from ..nn.pareto import NORMALIZATIONS, min_norm_weights_from_gram
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

    def __init__(self, model: MultiModalModel, options: ERLMROptions, context: MethodContext):
        super().__init__(model, options, context)
        if model.euler is None:
            raise ConfigError("method 'erlmr' needs the Euler representation; do not set model.euler: false")
        self.mmc = MMCLoss(options.phase_weight, options.modality_ce_weight, options.cosine)
        #: the weights of the last step (fixed ones with ``pareto: false``), for logging
        self.last_weights = torch.tensor([options.fusion_weight, options.mmc_weight])

    def training_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        output = model(inputs)
        order = model.modalities
        fusion_ce = F.cross_entropy(output.logits, labels)
        terms = self.mmc.terms([output.phases[m] for m in order], [output.modality_logits[m] for m in order], labels)
        losses = [fusion_ce, terms.total]
        targets = losses if self.options.pareto_target == "mmc" else [fusion_ce, 2 * terms.phase]
        if not self.options.pareto:
            weights = torch.tensor([self.options.fusion_weight, self.options.mmc_weight])
            w_fusion, w_mmc = weights.tolist()
            step.backward(w_fusion * fusion_ce + w_mmc * terms.total)
        elif self.options.pareto_mode == "params":
            weights = self._weighted_backward_on_params(model, losses, targets, step)
        else:
            weights = self._weighted_backward_on_features(losses, targets, [output.features[m] for m in order], step)
        self.last_weights = weights
        w_fusion, w_mmc = weights.tolist()
        logs = {
            "pareto_weight_fusion": weights[0],
            "pareto_weight_mmc": weights[1],
            "phase_cosine": terms.phase_cosine.detach(),
            "fusion_ce": fusion_ce.detach(),
            "mmc_loss": terms.total.detach(),
        }
        return StepResult((w_fusion * fusion_ce + w_mmc * terms.total).detach(), output, logs)

    def _solve(self, gram: Sequence[Sequence[float]], loss_values: Sequence[float]) -> torch.Tensor:
        """Min-norm weights (a float32 CPU tensor) from the Gram matrix of the two globally reduced gradients.

        The scalars come to the host once per step: a 2x2 problem is not worth dozens of device kernels.
        """
        weights = min_norm_weights_from_gram(
            torch.tensor(gram, dtype=torch.float64), torch.tensor(loss_values, dtype=torch.float64), self.options.normalization
        )
        floor = self.options.weight_floor
        return weights.clamp(floor, 1 - floor)

    def _weighted_backward_on_params(
        self, model: MultiModalModel, losses: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], step: StepContext
    ) -> torch.Tensor:
        """Both losses' gradients on every parameter, then their min-norm combination added to ``.grad``.

        Two backward passes, the least an exact solution needs (a third, on the shared parameters only,
        for ``pareto_target="authors"``); the gradients come averaged over ranks, and everything after
        them runs on whole lists of gradients with ``torch._foreach_*`` kernels and in place, so the step
        holds two gradients and copies none.
        """
        params = [p for p in model.parameters() if p.requires_grad]
        shared_ids = {id(p) for p in model.shared_parameters()}
        shared = [i for i, p in enumerate(params) if id(p) in shared_ids]
        solved_against = None
        if targets is not losses:
            (solved_against,) = step.gradients([targets[1]], [params[i] for i in shared], retain_graph=True)
        first, second = step.gradients(losses, params)
        gram, loss_values = gram_of_two(
            [first[i] for i in shared], solved_against or [second[i] for i in shared], mean_losses(targets)
        )
        weights = self._solve(gram, loss_values)
        w_0, w_1 = weights.tolist()
        torch._foreach_mul_(first, w_0)
        torch._foreach_add_(first, second, alpha=w_1)
        step.add_gradients(params, first)
        return weights

    def _weighted_backward_on_features(
        self, losses: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], features: Sequence[torch.Tensor],
        step: StepContext,
    ) -> torch.Tensor:
        """Weights from the gradients with respect to the fusion-head inputs (MGDA-UB), then one backward.

        A rank's feature gradients are the rows of the global ones for its share of the batch, scaled by
        the world size (each rank's loss is a mean over its share), so the global Gram matrix is the sum
        over ranks of the local ones divided by the world size squared.
        """
        grads = [torch.autograd.grad(t, features, retain_graph=True, materialize_grads=True) for t in targets]
        flat = torch.stack([torch.cat([g.flatten() for g in per_target]) for per_target in grads])
        gram = flat @ flat.T
        if world_size() > 1:
            gram = all_reduce_sum(gram.double()) / world_size() ** 2
        values = to_host(gram, mean_losses(targets))
        weights = self._solve([values[0:2], values[2:4]], values[4:])
        w_0, w_1 = weights.tolist()
        step.backward(w_0 * losses[0] + w_1 * losses[1])
        return weights


def squared_norms(groups: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """Σ‖t‖² over each group of tensors, in float64, from one multi-tensor norm kernel for all groups."""
    sizes = [len(group) for group in groups]
    norms = torch.stack(torch._foreach_norm([t for group in groups for t in group])).double()
    return torch.stack([part.square().sum() for part in norms.split(sizes)])


def gram_of_two(
    first: Sequence[torch.Tensor], second: Sequence[torch.Tensor], extra: torch.Tensor
) -> tuple[list[list[float]], list[float]]:
    """The Gram matrix of two gradients given as lists of tensors, without a copy of either, and the
    values of ``extra`` (fetched in the same transfer).

    ⟨a, b⟩ comes from the polarisation identity on unit vectors, ‖a/‖a‖ + b/‖b‖‖² = 2 + 2·cos, formed
    in place in ``second``, which is then scaled back; it is as exact as the cosine, however different
    the two norms are.
    """
    norm_a, norm_b, *extra_values = to_host(squared_norms([first, second]).sqrt(), extra)
    norm_a, norm_b = max(norm_a, 1e-30), max(norm_b, 1e-30)
    torch._foreach_mul_(second, 1 / norm_b)
    torch._foreach_add_(second, first, alpha=1 / norm_a)
    (sum_square,) = to_host(squared_norms([second]))
    torch._foreach_add_(second, first, alpha=-1 / norm_a)
    torch._foreach_mul_(second, norm_b)
    cross = norm_a * norm_b * (sum_square - 2) / 2
    return [[norm_a**2, cross], [cross, norm_b**2]], extra_values


def mean_losses(losses: Sequence[torch.Tensor]) -> torch.Tensor:
    """The loss values averaged over ranks (each rank's loss is the mean over its share of the batch)."""
    return all_reduce_mean(torch.stack([loss.detach() for loss in losses]))


def to_host(*tensors: torch.Tensor) -> list[float]:
    """The values of several small device tensors, in one transfer."""
    return torch.cat([t.detach().double().reshape(-1) for t in tensors]).tolist()
