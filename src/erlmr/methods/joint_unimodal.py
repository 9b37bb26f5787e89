"""Joint training plus every modality's own cross-entropy, with fixed weights: the "multi-loss" control.

The control that separates what a balancing method gains from its mechanism from what it gains by
merely adding uni-modal losses: ``loss = fusion_weight·CE(fused) + modality_weight·Σ_m CE(logits_m)``
on the fusion head's per-modality logits, no Euler map, no adaptive weights. It is ERL-MR's loss without
the Euler representation, the phase term and the Pareto weights (Han, Cai, Guo, Peng, ACM MM 2024,
doi:10.1145/3664647.3681215; authors' code
github.com/Weixiang-Han/ERL-MR-Harnessing-the-Power-of-Euler-Feature-Representations-for-Balanced-Multi-modal-Learning
sums the per-modality CEs with weight 1), and the uni-modal-loss baseline of the balancing literature
(e.g. the "uni-modal assistance" of Wei & Hu, MMPareto, ICML 2024, before its Pareto merge).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..nn.model import ModelOutput
from ..options import CheckedOptions, log_uniform, ranged
from .base import METHODS, Method


@dataclass
class JointUnimodalOptions(CheckedOptions):
    fusion_weight: float = ranged(1.0, ge=0)
    modality_weight: float = ranged(1.0, ge=0, search=log_uniform(0.1, 10.0))


@METHODS.register("joint_unimodal", "control: fused CE + every modality's own CE, fixed weights, no Euler map")
class JointUnimodal(Method):
    """``fusion_weight·CE(fused) + modality_weight·Σ_m CE(logits_m)``; one forward, one backward.

    Defaults 1 and 1: ERL-MR's per-modality CE weight (``modality_ce_weight``) with its fusion CE unweighted.
    """

    Options = JointUnimodalOptions

    def loss(self, output: ModelOutput, labels: torch.Tensor) -> torch.Tensor:
        modality = torch.stack([F.cross_entropy(output.modality_logits[m], labels) for m in self.context.modalities])
        return (
            self.options.fusion_weight * F.cross_entropy(output.logits, labels)
            + self.options.modality_weight * modality.sum()
        )
