"""OGM: on-the-fly gradient modulation of the dominant modality's encoder.

Peng, Wei, Deng, Wang, Hu. "Balanced Multimodal Learning via On-the-fly Gradient Modulation".
CVPR 2022. Official code: github.com/GeWu-Lab/OGM-GE_CVPR2022 (``main.py``, ``train_epoch``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..nn.model import MultiModalModel
from ..options import log_uniform, ranged
from .base import METHODS, Method, MethodContext, StepResult
from .scores import WindowOptions, in_window, mean_of_others, true_class_scores


@dataclass
class OGMOptions(WindowOptions):
    #: searched over the official README's suggestions (0.1 for VGGSound, 0.8 for CREMA-D) and around them
    alpha: float = ranged(0.1, ge=0, search=log_uniform(0.05, 1.0))
    modulation_end: int = ranged(50, ge=0)


@METHODS.register(
    "ogm", "OGM: shrink the dominant modality's encoder gradients by 1 − tanh(α·ρ) (Peng et al., CVPR 2022)"
)
class OGM(Method):
    """Scale the encoder gradients of the modality that is ahead on the current batch.

    After the backward pass, modality m's score is ``s_m = Σ_i softmax(logits_m)_i[y_i]`` from its own
    logits (``output.modality_logits``), and its discrepancy ratio is ``ρ_m = s_m / mean_{j≠m} s_j``.
    Every modality with ``ρ_m > 1`` gets the coefficient ``k_m = 1 − tanh(α·ρ_m)`` on the gradients
    of **all** parameters of its encoder; others get ``k_m = 1``; the fusion head (and the Euler
    representation, when present) is left alone. For two modalities this is the official rule exactly
    (``ρ_v = s_v / s_a``), except at a tie ``ρ = 1``, where the official code shrinks the first
    modality by ``1 − tanh(α)`` and this one shrinks neither.

    The official code shrinks only 4-D tensors (convolution kernels) of the two ResNets, so batch-norm
    parameters escape modulation; erlmr's encoders are of any kind (MLPs have no convolutions), so the
    whole encoder is scaled, which is what the paper's Eq. 10 describes ("the encoder's gradient").

    Applied in epochs ``modulation_start <= epoch <= modulation_end`` (0-based, inclusive) only.
    Defaults: α = 0.1 (README's default command; README recommends 0.8 for CREMA-D), window 0–50.
    As a pure gradient modulator it composes after any method: ``erlmr+ogm``, ``joint+ogm``.
    """

    Options = OGMOptions
    modulates_gradients = True
    #: the registered name, used in error messages and as the prefix of the logged coefficients
    name = "ogm"

    def __init__(self, model: MultiModalModel, options: OGMOptions, context: MethodContext):
        super().__init__(model, options, context)
        self.modalities = list(model.modalities)
        self.coefficients = torch.ones(len(self.modalities))

    @property
    def last_coefficients(self) -> dict[str, float]:
        """Each modality's coefficient at the last step (1 outside the modulation window)."""
        return dict(zip(self.modalities, self.coefficients.tolist()))

    def ratios(self, modality_logits: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """Each modality's discrepancy ratio ``ρ_m = s_m / mean_{j≠m} s_j`` on this batch (all ranks)."""
        scores = true_class_scores([modality_logits[m] for m in self.modalities], labels)
        return scores / mean_of_others(scores)

    def compute_coefficients(self, modality_logits: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        ratios = self.ratios(modality_logits, labels)
        shrunk = 1 - torch.tanh(self.options.alpha * ratios)
        return torch.where(ratios > 1, shrunk, torch.ones_like(shrunk))

    def modify_gradients(self, model: MultiModalModel, result: StepResult, labels: torch.Tensor) -> None:
        o = self.options
        if in_window(self.epoch, o.modulation_start, o.modulation_end):
            coefficients = self.compute_coefficients(result.output.modality_logits, labels)
            for m, k in zip(self.modalities, coefficients):
                self.modulate([p.grad for p in model.encoders[m].parameters() if p.grad is not None], k)
        else:
            coefficients = torch.ones(len(self.modalities))
        self.coefficients = coefficients.detach()
        result.logs.update({f"{self.name}_coefficient_{m}": k for m, k in zip(self.modalities, self.coefficients)})

    def modulate(self, grads: list[torch.Tensor], coefficient: torch.Tensor) -> None:
        """Scale one encoder's gradients in place."""
        if grads:
            torch._foreach_mul_(grads, coefficient.to(grads[0].device))
