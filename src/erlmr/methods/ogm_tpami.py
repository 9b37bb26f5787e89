"""OGM as released with the TPAMI extension of OGM-GE: OGM-GE after a six-epoch warm-up, α = 0.8.

Wei, Hu, Du, Wen. "On-the-fly Modulation for Balanced Multimodal Learning". IEEE TPAMI 2024
(ieeexplore document 10694738; it extends Peng et al., CVPR 2022). Official code:
github.com/GeWu-Lab/BML_TPAMI2024 @ 4b3aa4f (``code/main.py`` ``train``, ``code/scripts/train_ogm.sh``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..options import log_uniform, ranged
from .base import METHODS
from .ogm import OGM, OGMOptions
from .ogm_ge import OGMGE

#: the factor ``--use_OGM_plus`` puts on the weak modality's gradients (a constant in the official code)
WEAK_BOOST = 4.0


@dataclass
class OGMTPAMIOptions(OGMOptions):
    #: searched over the same range as ogm's (it holds the journal's 0.8)
    alpha: float = ranged(0.8, ge=0, search=log_uniform(0.05, 1.0))
    #: the official warm-up: no modulation while ``epoch <= 5``
    modulation_start: int = ranged(6, ge=0)
    modulation_end: int = ranged(60, ge=0)
    #: Gaussian noise as OGM-GE (``--modulation OGM_GE``, the default); False is ``--modulation OGM``
    noise: bool = True
    #: ``--use_OGM_plus``: leave the dominant modality alone and multiply the weak ones' gradients by 4
    boost_weak: bool = False


@METHODS.register(
    "ogm_tpami", "OGM of the TPAMI extension: OGM-GE with a 6-epoch warm-up, α 0.8 (Wei, Hu, Du, Wen, TPAMI 2024)"
)
class OGMTPAMI(OGMGE):
    """The gradient-modulation half of "On-the-fly Modulation" (its other half is ``opm``).

    The released code applies the CVPR OGM-GE rule unchanged — ``k_m = 1 − tanh(α·ρ_m)`` on the
    encoder gradients of every modality with ``ρ_m > 1``, plus ``N(0, (std(g) + 1e-8)²)`` on every
    encoder gradient — so this is :class:`~erlmr.methods.ogm_ge.OGMGE` with the journal's defaults:
    α = 0.8 and the window epochs 6–60 (``train_ogm.sh`` sets 0–60, and ``train`` skips modulation
    while ``epoch <= 5``, a warm-up the CVPR code does not have). ``noise: false`` is the code's
    ``--modulation OGM``; ``boost_weak: true`` its ``--use_OGM_plus``, used by no released script:
    the dominant modality keeps k = 1 and every modality with ``ρ_m < 1`` gets k = 4.

    As ``ogm``: the whole encoder is scaled, not only 4-D convolution kernels, and M > 2 uses the
    ratio to the mean of the others. A pure gradient modulator: ``erlmr+ogm_tpami`` composes.
    """

    Options = OGMTPAMIOptions
    name = "ogm_tpami"

    def compute_coefficients(self, modality_logits: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        if not self.options.boost_weak:
            return super().compute_coefficients(modality_logits, labels)
        ratios = self.ratios(modality_logits, labels)
        return torch.where(ratios < 1, torch.full_like(ratios, WEAK_BOOST), torch.ones_like(ratios))

    def modulate(self, grads: list[torch.Tensor], coefficient: torch.Tensor) -> None:
        if self.options.noise:
            super().modulate(grads, coefficient)
        else:
            OGM.modulate(self, grads, coefficient)
