"""AMSS+: AMSS whose kept units are re-weighted so that the masked gradient is unbiased.

Yang, Pan, Jiang, Xu, Tang. "Learning to Rebalance Multi-Modal Optimization by Adaptively Masking
Subnetworks". IEEE TPAMI 47(6), 2025 (arXiv 2404.08347); the abstract names AMSS+ as the variant that
uses unbiased estimation. Official code: github.com/njustkmg/TPAMI-AMSS @ 3161ecc72f9cb8f8a6b3abed6d863a03339dd9e9
(``AMSS/train_test.py`` with ``--isbias=1``, the README's AMSS+ commands).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..options import one_of
from .amss import AMSS, AMSSOptions
from .base import METHODS


@dataclass
class AMSSPlusOptions(AMSSOptions):
    #: inverse_probability: kept unit j gets 1/q_j, q_j its probability of being kept (unbiased);
    #: official: 1/(π_j + 1/n) on units drawn like AMSS's, as the released code does (biased, see below)
    weighting: str = one_of("inverse_probability", ("inverse_probability", "official"))


def inclusion_probabilities(importance: torch.Tensor, count: int) -> torch.Tensor:
    """``q_j = min(1, κ·u_j)`` with κ such that ``Σ q_j = count`` (units without importance get 0).

    The largest units are capped at 1 one after the other (water-filling): with the k largest capped,
    ``κ = (count − k) / Σ_{rest} u``, and k is the smallest number for which the largest uncapped unit
    still has ``κ·u <= 1``. Needs more than ``count`` units with importance > 0.
    """
    values, order = importance.double().sort(descending=True)
    tails = values.flip(0).cumsum(0).flip(0)  # tails[k] = Σ_{j >= k} values[j]
    capped = torch.arange(count, device=values.device)
    kappas = (count - capped) / tails[:count]
    first = int(torch.nonzero(kappas * values[:count] <= 1)[0])
    ranked = torch.where(torch.arange(len(values), device=values.device) < first, 1.0, kappas[first] * values)
    return torch.zeros_like(ranked).scatter_(0, order, ranked.clamp(max=1.0))


def systematic_sample(probabilities: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Indices of exactly ``Σ q`` units, unit j chosen with probability ``q_j`` (each ``q_j <= 1``).

    Systematic πps sampling: the units' cumulative probabilities are cut at ``u, u + 1, u + 2, …`` for
    one ``u ~ U(0, 1)``; a unit is chosen when a cut falls inside its interval of length q_j.
    """
    cumulative = probabilities.double().cumsum(0)
    u = torch.rand((), generator=generator, device=probabilities.device, dtype=torch.float64)
    cuts = torch.floor(cumulative - u)
    previous = torch.cat([torch.floor(-u).view(1), cuts[:-1]])
    return torch.nonzero(cuts > previous).flatten()


@METHODS.register(
    "amss_plus", "AMSS+: AMSS with kept units re-weighted by their inverse keep probability (Yang et al., TPAMI 2025)"
)
class AMSSPlus(AMSS):
    """AMSS (same keep ratios c_m, same ⌈n·c_m⌉ units per tensor), with the kept units' gradients
    scaled up so that the expected masked gradient equals the full one.

    ``weighting: inverse_probability`` (default): unit j is kept with probability
    ``q_j = min(1, κ·π_j)``, ``π = u/Σu`` its importance share and κ such that ``Σ q = ⌈n·c_m⌉``
    (:func:`inclusion_probabilities`), drawn by systematic sampling so that exactly that many units are
    kept (:func:`systematic_sample`), and a kept unit's gradient is multiplied by ``1/q_j``; then
    ``E[mask_j] = 1`` for every unit: the unbiased estimate the paper's abstract promises.

    ``weighting: official`` reproduces the released code: units drawn as in AMSS
    (``multinomial`` without replacement ∝ u) and weighted ``1/(π_j + 1/n)``. That weight is not an
    inverse probability: with equal importances and c = 0.5 every kept unit gets n/2 and the expected
    mask is n/4 (16 for 64 units), so it amplifies the masked gradients by one to two orders of
    magnitude (the official ResNets' batch norm absorbs much of it; an MLP encoder does not). It is kept
    one option away for comparison with the authors' numbers, not as the default.
    """

    Options = AMSSPlusOptions
    name = "amss_plus"

    def unit_weights(self, importance: torch.Tensor, count: int) -> torch.Tensor:
        alive = importance > 0
        if int(alive.sum()) <= count:  # every unit with a gradient is kept, with probability 1
            if self.options.weighting == "official":
                return torch.where(alive, 1 / (importance / importance.sum() + 1 / len(importance)), 0.0)
            return alive.float()
        if self.options.weighting == "official":
            kept = super().unit_weights(importance, count)
            return kept / (importance / importance.sum() + 1 / len(importance))
        probabilities = inclusion_probabilities(importance, count)
        chosen = systematic_sample(probabilities, self.sampler)
        return torch.zeros_like(importance).index_copy_(0, chosen, (1 / probabilities[chosen]).to(importance.dtype))
