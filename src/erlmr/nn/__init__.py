"""The drop-in pieces: Euler representation, MMC loss, min-norm weights, fusion heads, the multi-modal model.

Nothing here imports the trainer, the data loaders or any optional dependency, so a project that only
wants ERL-MR's parts in its own loop pays for torch alone.
"""

from .balance import Gradients, balanced_backward
from .euler import EulerOutput, EulerRepresentation
from .fusion import FUSIONS, ConcatFusion, FiLMFusion, FusionHead, FusionOutput, GatedFusion, SumFusion
from .losses import MMCLoss
from .model import ModelOutput, MultiModalModel
from .normalize import InputNormalizer
from .pareto import min_norm_weights

__all__ = [
    "FUSIONS",
    "ConcatFusion",
    "Gradients",
    "balanced_backward",
    "EulerOutput",
    "EulerRepresentation",
    "FiLMFusion",
    "FusionHead",
    "FusionOutput",
    "GatedFusion",
    "InputNormalizer",
    "MMCLoss",
    "ModelOutput",
    "MultiModalModel",
    "SumFusion",
    "min_norm_weights",
]
