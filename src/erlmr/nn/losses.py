"""The Multi-Modal Constrained (MMC) loss of ERL-MR (Han et al., ACM MM 2024)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

COSINE_AXES = ("sample", "batch")


@dataclass
class MMCTerms:
    """The parts of the MMC loss: ``total = phase_weight·phase + ce_weight·modality_ce``."""

    total: torch.Tensor
    phase: torch.Tensor
    modality_ce: torch.Tensor
    phase_cosine: torch.Tensor


class MMCLoss(nn.Module):
    """Phase consistency across modalities plus each modality's own cross-entropy.

    ``phase = mean over modality pairs (i, j) of 1 − cos_sim(θ_i, θ_j)`` and
    ``modality_ce = Σ_m CE(logits_m, y)``. With ``cosine="sample"`` the cosine is taken per sample over
    the feature dimension and averaged over the batch; ``cosine="batch"`` reproduces the authors' code,
    which takes it per feature across the batch (``dim=0``) and averages over features.

    Args:
        phase_weight: weight of the phase-consistency term.
        ce_weight: weight of the summed per-modality cross-entropy.
        cosine: ``"sample"`` (default) or ``"batch"``.
    """

    def __init__(self, phase_weight: float = 1.0, ce_weight: float = 1.0, cosine: str = "sample"):
        super().__init__()
        if cosine not in COSINE_AXES:
            raise ConfigError(f"unknown cosine axis {cosine!r}; valid: {', '.join(COSINE_AXES)}")
        if phase_weight < 0 or ce_weight < 0:
            raise ConfigError(f"MMC loss weights must be >= 0, got phase {phase_weight}, ce {ce_weight}")
        self.phase_weight = phase_weight
        self.ce_weight = ce_weight
        self.dim = 1 if cosine == "sample" else 0

    def terms(
        self, phases: Sequence[torch.Tensor] | None, modality_logits: Sequence[torch.Tensor], labels: torch.Tensor
    ) -> MMCTerms:
        """The loss and its parts. ``phases`` None (a model without the Euler map) leaves the phase term
        out: the loss is then the weighted per-modality cross-entropy alone."""
        if len(modality_logits) < 2:
            raise ConfigError(f"the MMC loss needs at least two modalities, got {len(modality_logits)}")
        if phases is not None and len(modality_logits) != len(phases):
            raise ConfigError(f"got phases for {len(phases)} modalities but logits for {len(modality_logits)}")
        modality_ce = torch.stack([F.cross_entropy(z, labels) for z in modality_logits]).sum()
        if phases is None:
            phase_cosine = modality_ce.new_ones(())
        else:
            cosines = torch.stack([F.cosine_similarity(a, b, dim=self.dim).mean() for a, b in combinations(phases, 2)])
            phase_cosine = cosines.mean()
        phase = 1.0 - phase_cosine
        total = self.phase_weight * phase + self.ce_weight * modality_ce
        return MMCTerms(total=total, phase=phase, modality_ce=modality_ce, phase_cosine=phase_cosine)

    def forward(
        self, phases: Sequence[torch.Tensor], modality_logits: Sequence[torch.Tensor], labels: torch.Tensor
    ) -> torch.Tensor:
        return self.terms(phases, modality_logits, labels).total
