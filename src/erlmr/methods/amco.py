"""AMCo: adaptive masking of the modality the model depends on, co-optimised with uni-modal losses.

Zhou, Liang, Zheng, Xuan, Kumada. "Adaptive Mask Co-optimization for Modal Dependence in Multimodal
Learning". ICASSP 2023 (IEEE document 10096641). No official code was released; this follows the port
in BalanceBenchmark (github.com/GeWu-Lab/BalanceBenchmark @ 4c1482f, ``balancemm/trainer/AMCo_trainer.py``,
``BaseClassifierAMCoModel`` in ``balancemm/models/avclassify_model.py``) with its bugs fixed (see the
class docstring).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Collection, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.model import ModelOutput, MultiModalModel
from ..options import ranged
from ..parallel import all_reduce_mean
from .base import METHODS, Method, MethodContext, StepResult
from .scores import WindowOptions, in_window

if TYPE_CHECKING:
    from ..training.step import StepContext

#: training progress (in epochs) is divided by this before the schedule's ε applies: BalanceBenchmark's 1/10
PROGRESS_SCALE = 10.0


@dataclass
class AMCoOptions(WindowOptions):
    #: σ: a modality is "dependent" when its share of the probability mass exceeds this
    sigma: float = ranged(0.5, gt=0, le=1)
    #: ε: the masked fraction reaches 1 when (epochs trained)/10 reaches ε
    epsilon: float = ranged(0.3, gt=0)
    modulation_end: int = ranged(80, ge=0)
    #: the learnable C×C layer ``linear_star`` on the fused logits (BalanceBenchmark: always on)
    class_layer: bool = True


def mask_fraction(progress_epochs: float, epsilon: float) -> float:
    """``p = sin(π/2 · min(ε, τ)/ε)`` with ``τ = progress/10``: 0 at the start, 1 from epoch 10ε on."""
    tau = progress_epochs / PROGRESS_SCALE
    return math.sin(math.pi / 2 * min(epsilon, tau) / epsilon)


def dependency_shares(modality_logits: list[torch.Tensor]) -> torch.Tensor:
    """Per modality, the batch mean of the mass its block takes in a softmax over all M·C logits
    concatenated (shares sum to 1); averaged over ranks. Detached, shape ``(M,)``."""
    stacked = torch.cat([x.detach() for x in modality_logits], dim=1).softmax(1)
    blocks = stacked.unflatten(1, (len(modality_logits), -1)).sum(2)
    return all_reduce_mean(blocks.mean(0))


def mask_dimensions(features: torch.Tensor, fraction: float) -> torch.Tensor:
    """``features`` with ``⌊fraction·D⌋`` of its D dimensions, drawn at random for the whole batch
    (global torch RNG), set to zero."""
    width = features.shape[1]
    dropped = torch.randperm(width)[: int(fraction * width)].to(features.device)
    mask = torch.ones(width, device=features.device, dtype=features.dtype).index_fill(0, dropped, 0.0)
    return features * mask


@METHODS.register(
    "amco",
    "AMCo: mask feature dimensions of the modality the model depends on, plus uni-modal CE (Zhou et al., ICASSP 2023)",
)
class AMCo(Method):
    """Make the modality the model depends on harder to fit, and keep every modality's own head trained.

    Each step in the window (epochs ``modulation_start``–``modulation_end``): modality m's dependency
    share ``d_m`` (:func:`dependency_shares`, from this step's unmasked per-modality logits); every
    modality with ``d_m > σ`` is dependent, and ``⌊p·D_m⌋`` random dimensions of its fusion-head input
    ``z_m`` are zeroed for the batch, ``p`` = :func:`mask_fraction` of the epochs trained so far
    (fractional). Loss ``CE(linear_star(head(masked z)), y) + Σ_m CE(ℓ_m, y)`` with ``ℓ_m`` the
    unmasked per-modality logits (the co-optimisation). Outside the window: ``CE(linear_star(fused))``.
    Prediction: ``linear_star`` of the model's fused logits, nothing masked.

    Against BalanceBenchmark's port: its mask is a ``(2, C)`` tensor over the *class logits* that only
    broadcasts when DataParallel splits the batch over exactly two GPUs (any other setting fails once
    a modality is dependent) — here ``⌊p·D_m⌋`` *feature* dimensions are masked, as its earlier version
    and the ``U: 512`` option did, and any device count works; its schedule restarts at p = 0 every
    epoch and, from epoch 1 on, saturates at p = 1 within ⌈3/e⌉ batches (``l_t += epoch/10`` per batch)
    — here p grows with training progress, 0.5 / 0.87 / 1 at epochs 1 / 2 / 3; its dependency comes
    from the previous step's *masked* logits, which makes the decision flip every other step — here
    from this step's unmasked ones; its uni-modal losses use the masked logits, ours the unmasked
    ones (what "preserve the performance on dependent modalities" asks). Defaults σ 0.5, ε 0.3,
    window 0–80, ``linear_star`` on (BalanceBenchmark's ``trainer_config.yaml``). For M > 2, σ = 0.5
    means "holds the majority of the mass". Extra cost per step: one more fusion-head evaluation, M
    cross-entropies and a C×C linear layer.
    """

    Options = AMCoOptions

    def __init__(self, model: MultiModalModel, options: AMCoOptions, context: MethodContext):
        super().__init__(model, options, context)
        self.modalities = list(model.modalities)
        classes = context.num_classes
        self.linear_star = nn.Linear(classes, classes) if options.class_layer else nn.Identity()

    def training_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        output = model(inputs)
        o = self.options
        if not in_window(self.epoch, o.modulation_start, o.modulation_end):
            logits = self.linear_star(output.logits)
            loss = F.cross_entropy(logits, labels)
            step.backward(loss)
            return StepResult(loss.detach(), dataclasses.replace(output, logits=logits.detach()))
        modality_logits = [output.modality_logits[m] for m in self.modalities]
        shares = dependency_shares(modality_logits)
        fraction = mask_fraction(step.epoch + step.index / max(step.steps_per_epoch, 1), o.epsilon)
        features = [
            mask_dimensions(output.features[m], fraction) if shares[i] > o.sigma else output.features[m]
            for i, m in enumerate(self.modalities)
        ]
        logits = self.linear_star(model.head(features).logits)
        loss = F.cross_entropy(logits, labels) + sum(F.cross_entropy(x, labels) for x in modality_logits)
        step.backward(loss)
        logs = {f"amco_share_{m}": shares[i] for i, m in enumerate(self.modalities)}
        logs["amco_mask_fraction"] = torch.tensor(fraction)
        return StepResult(loss.detach(), dataclasses.replace(output, logits=logits.detach()), logs)

    def predict(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], absent: Collection[str] = ()
    ) -> ModelOutput:
        output = model(inputs, absent=absent)
        return dataclasses.replace(output, logits=self.linear_star(output.logits))
