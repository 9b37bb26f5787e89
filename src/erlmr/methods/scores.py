"""Per-modality statistics shared by the balancing methods (OGM/OGM-GE, PMR, AGM).

Not a method itself: small functions that turn per-modality logits into the batch statistics those
methods compare, and the epoch window in which a method modulates. Every statistic that decides a
coefficient is reduced over ranks here, so all ranks of a distributed run apply the same coefficient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import ConfigError
from ..options import CheckedOptions, ranged
from ..parallel import all_reduce_sum


def true_class_scores(logits: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Per modality, the batch sum of the softmax probability of the true class (summed over ranks).

    This is the confidence score of OGM-GE (Peng et al., CVPR 2022) and PMR (Fan et al., CVPR 2023);
    a sum, not a mean, as in their code, so it only enters through ratios. Detached; shape ``(M,)``.
    """
    index = labels.unsqueeze(1)
    scores = torch.stack([x.detach().softmax(1).gather(1, index).sum() for x in logits])
    return all_reduce_sum(scores)


def mean_of_others(values: torch.Tensor) -> torch.Tensor:
    """``out[m] = mean of values[j] over j != m`` for a ``(M,)`` tensor, M >= 2."""
    return (values.sum() - values) / (len(values) - 1)


@dataclass
class WindowOptions(CheckedOptions):
    """Options of a method that modulates in the epoch window ``modulation_start <= epoch <=
    modulation_end`` (0-based, inclusive). A subclass re-declares ``modulation_end`` with its default."""

    modulation_start: int = ranged(0, ge=0)
    modulation_end: int = ranged(0, ge=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.modulation_end < self.modulation_start:
            raise ConfigError(
                f"modulation_end must be >= modulation_start, got {self.modulation_end} and {self.modulation_start}"
            )


def in_window(epoch: int, start: int, end: int) -> bool:
    return start <= epoch <= end
