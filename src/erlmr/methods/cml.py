"""CML: calibrating multimodal learning: confidence must not rise when a modality is removed.

Ma*, Zhang*, Zhang, Wu, Fu, Zhou, Hu. "Calibrating Multimodal Learning". ICML 2023.
Official code: github.com/QingyangZhang/CML @ 9d2496e (``miwae/train.py``: ``get_multi_mask`` and the
rank loss of the second training stage; defaults from its argparse and README command).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..nn.fusion import FusionHead
from ..nn.model import MultiModalModel
from ..options import CheckedOptions, log_uniform, one_of, ranged
from ..training.distributed import world_size
from .base import METHODS, Method, StepResult

if TYPE_CHECKING:
    from ..training.step import StepContext


@dataclass
class CMLOptions(CheckedOptions):
    #: λ, weight of the ranking penalty: the README's ``--beta 10`` divided by 100 as the code does
    #: (its argparse default 0 turns CML off); BalanceBenchmark's ``lam`` is 0.1 too
    rank_weight: float = ranged(0.1, ge=0, search=log_uniform(0.01, 1.0))
    #: ε, the tolerance margin (``--epsilon``, default 0)
    margin: float = ranged(0.0, ge=0)
    #: "sum" over the batch as the official code (its effect grows with the batch size), or "mean"
    rank_reduction: str = one_of("sum", ("sum", "mean"))


def removal_masks(batch: int, modalities: int, device: torch.device) -> torch.Tensor:
    """``keep[k, i, m]`` (M, B, M): 1 where modality m is still present at level k for sample i.

    Every sample draws its own random order of the modalities (global torch RNG); level k removes the
    first k of that order, so level 0 has every modality and each level removes one more.
    """
    order_position = torch.rand(batch, modalities, device=device).argsort(1).argsort(1)
    levels = torch.arange(modalities, device=device).view(-1, 1, 1)
    return (order_position.unsqueeze(0) >= levels).float()


def level_logits(head: FusionHead, features: Sequence[torch.Tensor], keep: torch.Tensor) -> list[torch.Tensor]:
    """The fused logits at every level but 0: each removed modality's fusion input zeroed per sample,
    as a missing modality is (``model(inputs, absent=...)``)."""
    return [head([x * keep[k, :, m : m + 1] for m, x in enumerate(features)]).logits for k in range(1, len(keep))]


def ranking_penalty(levels: Sequence[torch.Tensor], labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Per sample (B,), summed over adjacent levels k → k+1 with confidence ``c = max softmax``:
    ``ReLU((c_{k+1} − c_k)·[ŷ_k = y] − ε) + ReLU((c_{k+1} − sg(c_k))·[ŷ_k ≠ y ∧ ŷ_{k+1} ≠ y] − ε)``.

    When the fuller input is right, removing a modality must not raise the confidence (both sides are
    pushed); when both are wrong, only the reduced input's confidence is pushed down.
    """
    confidence, predicted = zip(*(x.softmax(1).max(1) for x in levels))
    right = [p == labels for p in predicted]
    penalty = torch.zeros_like(confidence[0])
    for k in range(len(levels) - 1):
        fuller_right = right[k].float()
        both_wrong = (~right[k] & ~right[k + 1]).float()
        penalty = penalty + F.relu((confidence[k + 1] - confidence[k]) * fuller_right - margin)
        penalty = penalty + F.relu((confidence[k + 1] - confidence[k].detach()) * both_wrong - margin)
    return penalty


@METHODS.register(
    "cml", "CML: removing a modality must not raise the confidence, a ranking penalty (Ma, Zhang et al., ICML 2023)"
)
class CML(Method):
    """``loss = mean_k CE(g_k, y) + λ·R`` over levels k = 0..M−1 of removed modalities.

    One forward pass encodes every modality; each sample draws a random order of the modalities
    (:func:`removal_masks`), and level k's logits ``g_k`` come from the fusion head with the first k
    of that order zeroed (:func:`level_logits`; level 0 is the plain fused output). R is
    :func:`ranking_penalty`, summed over the batch as in the official code (``rank_reduction: mean``
    averages instead). In a distributed run the local sum is multiplied by the number of ranks, so that
    the averaged gradient is that of the sum over the global batch, as in one process. ``predict`` is
    the plain model. Defaults: λ = 0.1 (README command ``--beta 10``; the code uses β/100), ε = 0.

    Differences from the official code: a removed modality's fusion input is zeroed (erlmr's "absent")
    instead of its raw input being imputed with the training mean, so the encoders run once rather than
    once per level; one optimiser step per batch (official: 5 from epoch 30, after 29 epochs of its
    MIWAE reconstruction pre-training, which has no counterpart here); the official re-seeds the RNG
    every epoch before testing, so every epoch after the first draws the same removal orders. Against
    BalanceBenchmark's port: its penalty is one hinge on the batch-summed difference (a sample whose
    confidence rises can be cancelled by others), its correctness mask is computed and never used, its
    second term is missing, and its order is drawn once per epoch for all samples.

    Extra cost per step: M−1 extra fusion-head evaluations and softmaxes; no extra encoder pass.
    """

    Options = CMLOptions

    def training_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        output = model(inputs)
        features = [output.features[m] for m in model.modalities]
        keep = removal_masks(len(labels), len(features), labels.device)
        levels = [output.logits, *level_logits(model.head, features, keep)]
        classification = torch.stack([F.cross_entropy(g, labels) for g in levels]).mean()
        penalty = ranking_penalty(levels, labels, self.options.margin)
        rank = penalty.sum() * world_size() if self.options.rank_reduction == "sum" else penalty.mean()
        loss = classification + self.options.rank_weight * rank
        step.backward(loss)
        logs = {"cml_rank": rank.detach(), "cml_classification": classification.detach()}
        return StepResult(loss.detach(), output, logs)
