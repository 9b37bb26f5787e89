"""OGM-GE: OGM plus Gaussian noise on the encoder gradients ("generalisation enhancement").

Peng, Wei, Deng, Wang, Hu. "Balanced Multimodal Learning via On-the-fly Gradient Modulation".
CVPR 2022. Official code: github.com/GeWu-Lab/OGM-GE_CVPR2022 (``main.py``, ``--modulation OGM_GE``).
"""

from __future__ import annotations

import torch

from ..nn.model import MultiModalModel
from .base import METHODS, MethodContext
from .ogm import OGM, OGMOptions

#: added to the noise standard deviation, as in the official code, so a zero gradient still gets noise
STD_EPSILON = 1e-8


@METHODS.register("ogm_ge", "OGM-GE: OGM plus Gaussian noise with each gradient's own std (Peng et al., CVPR 2022)")
class OGMGE(OGM):
    """OGM, and every encoder parameter's gradient ``g`` becomes ``k_m·g + ε`` with ``ε ~ N(0, σ²)``,
    ``σ = std(g) + 1e-8`` taken from the *unscaled* gradient.

    As in the official code the noise goes to **every** modality's encoder in the modulation window,
    the non-dominant ones (``k = 1``) included, and never to the fusion head. The noise comes from a
    generator of its own seeded with ``torch.initial_seed()``, so all ranks of a distributed run (same
    seed, gradients already averaged) add the same noise and the run's other random streams are
    untouched.
    """

    name = "ogm_ge"

    def __init__(self, model: MultiModalModel, options: OGMOptions, context: MethodContext):
        super().__init__(model, options, context)
        self.noise = torch.Generator(device=context.device).manual_seed(torch.initial_seed())

    def modulate(self, grads: list[torch.Tensor], coefficient: torch.Tensor) -> None:
        noise = [
            torch.randn(g.shape, generator=self.noise, device=g.device, dtype=g.dtype) * (_std(g) + STD_EPSILON)
            for g in grads
        ]
        super().modulate(grads, coefficient)
        if grads:
            torch._foreach_add_(grads, noise)

    def get_extra_state(self) -> dict:
        return {"noise": self.noise.get_state()}

    def set_extra_state(self, state: dict) -> None:
        self.noise.set_state(state["noise"].cpu())


def _std(tensor: torch.Tensor) -> torch.Tensor:
    """The (unbiased) standard deviation, 0 for a single element instead of NaN."""
    return tensor.std() if tensor.numel() > 1 else tensor.new_zeros(())
