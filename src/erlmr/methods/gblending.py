"""Gradient-Blending: weight each head's loss by how well it generalises relative to how much it overfits.

Wang, Tran, Feiszli. "What Makes Training Multi-modal Classification Networks Hard?". CVPR 2020.
No official code was released; super-epoch length 10 follows BalanceBenchmark
(github.com/GeWu-Lab/BalanceBenchmark), which implements online G-Blend.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.base import Split
from ..nn.model import ModelOutput, MultiModalModel
from ..options import CheckedOptions, ranged
from ..parallel import all_reduce_mean
from .base import METHODS, Method, MethodContext, require_splits


@dataclass
class GBlendingOptions(CheckedOptions):
    #: epochs between two estimates of the weights (the paper's super-epoch, online G-Blend)
    super_epoch: int = ranged(10, ge=1)
    #: |ΔO| is taken as at least this, so a head that neither overfits nor underfits cannot take all weight
    overfit_floor: float = ranged(1e-3, gt=0)


@dataclass
class LossSnapshot:
    """Per-sample mean cross-entropy of every head (fused first, then each modality) on train and val."""

    train: torch.Tensor
    val: torch.Tensor


def blend_weights(start: LossSnapshot, end: LossSnapshot, overfit_floor: float) -> torch.Tensor | None:
    """G-Blend weights ``w_k ∝ ΔG_k / ΔO_k²`` summing to 1, or None when no head generalised.

    ΔG = L^V_start − L^V_end (generalisation gain); ΔO = O_end − O_start with O = L^V − L^T (overfitting).
    A head whose validation loss did not fall (ΔG ≤ 0) gets weight 0.
    """
    gain = start.val - end.val
    overfit_change = (end.val - end.train) - (start.val - start.train)
    scores = gain.clamp_min(0) / overfit_change.square().clamp_min(overfit_floor**2)
    total = scores.sum()
    if not total > 0:
        return None
    return scores / total


@torch.no_grad()
def head_losses(model: MultiModalModel, split: Split, batch_size: int, device: torch.device) -> torch.Tensor:
    """Mean cross-entropy of the fused head and of every modality's logits over ``split``, in eval mode."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(len(model.modalities) + 1, device=device)
    for inputs, labels in split.batches(batch_size, device):
        output = model(inputs)
        losses = [F.cross_entropy(logits, labels, reduction="sum") for logits in head_logits(output, model.modalities)]
        totals += torch.stack(losses)
    model.train(was_training)
    return all_reduce_mean(totals / len(split))


def head_logits(output: ModelOutput, modalities: list[str]) -> list[torch.Tensor]:
    """The fused logits, then each modality's, in the order of the weights."""
    return [output.logits] + [output.modality_logits[m] for m in modalities]


@METHODS.register(
    "gblending",
    "Gradient-Blending: loss weights from each head's generalisation/overfitting on val (Wang et al., CVPR 2020)",
)
class GBlending(Method):
    """Online G-Blend: ``loss = w_0·CE(fused) + Σ_m w_m·CE(logits_m)``.

    The per-modality heads are the fusion head's per-modality logits (``output.modality_logits``). The
    weights start equal. Before the first epoch, and at the end of every super-epoch, every head's mean
    loss is measured on the whole train split and on the validation split (``context.splits.val``; the
    test split is never read) with the model in eval mode; the weights for the next super-epoch are
    ``ΔG/ΔO²`` between the last two measurements, normalised to sum 1 (the paper's normaliser
    ``Σ ΔG/(2ΔO²)`` would make them sum to 2). If no head's validation loss fell, the weights are kept.

    Extra cost: one forward pass over train + val per super-epoch (plus one before training).
    """

    Options = GBlendingOptions
    # Buffers (add_state), typed: nn.Module types an attribute it does not know as a tensor or a module.
    weights: torch.Tensor
    snapshot: torch.Tensor
    measured: torch.Tensor

    def __init__(self, model: MultiModalModel, options: GBlendingOptions, context: MethodContext):
        super().__init__(model, options, context)
        heads = len(context.modalities) + 1
        self.add_state("weights", torch.full((heads,), 1.0 / heads))
        # The last measurement of every head's train and val loss (already averaged over ranks).
        self.add_state("snapshot", torch.zeros(2, heads))
        self.add_state("measured", torch.zeros((), dtype=torch.bool))

    def loss(self, output: ModelOutput, labels: torch.Tensor) -> torch.Tensor:
        losses = torch.stack(
            [F.cross_entropy(logits, labels) for logits in head_logits(output, self.context.modalities)]
        )
        return (self.weights.to(losses.dtype) * losses).sum()

    def measure(self, model: MultiModalModel) -> LossSnapshot:
        splits, context = require_splits("gblending", self.context), self.context
        return LossSnapshot(
            head_losses(model, splits.train, context.batch_size, context.device),
            head_losses(model, splits.val, context.batch_size, context.device),
        )

    def on_epoch_start(self, model: MultiModalModel, epoch: int) -> None:
        super().on_epoch_start(model, epoch)
        if not self.measured:
            self.keep(self.measure(model))

    def on_epoch_end(self, model: MultiModalModel, epoch: int) -> dict[str, float]:
        if (epoch + 1) % self.options.super_epoch == 0:
            current = self.measure(model)
            weights = blend_weights(LossSnapshot(*self.snapshot), current, self.options.overfit_floor)
            if weights is not None:
                self.weights.copy_(weights)
            self.keep(current)
        names = ["fused"] + list(self.context.modalities)
        return {f"gblend_weight_{name}": float(w) for name, w in zip(names, self.weights)}

    def keep(self, snapshot: LossSnapshot) -> None:
        self.snapshot.copy_(torch.stack([snapshot.train, snapshot.val]))
        self.measured.fill_(True)
