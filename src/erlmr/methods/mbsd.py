"""MBSD: self-distillation from the stronger modality into the weaker one, per sample and per pair.

Liu, Li, Song, Yang, Zeng. "Multimodal Pre-Training with Self-Distillation for Product Understanding in
E-Commerce". WSDM 2023 (doi 10.1145/3539597.3570423), whose self-distillation "transfers the knowledge
in the dominated modality to the weaker modality". The paper releases no code; what the field calls
MBSD is the adaptation in BalanceBenchmark (github.com/GeWu-Lab/BalanceBenchmark @ 4c1482f,
``balancemm/trainer/MBSD_trainer.py``, ``training_step``), the only implementation. This one follows it
with its bugs fixed (see :class:`MBSD`).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..nn.model import MultiModalModel
from ..options import ranged
from .base import METHODS, Method, StepResult
from .scores import WindowOptions, in_window

if TYPE_CHECKING:
    from ..training.step import StepContext


@dataclass
class MBSDOptions(WindowOptions):
    #: weight of the per-pair KL distillation term (BalanceBenchmark: 1, an unweighted sum)
    kl_weight: float = ranged(1.0, ge=0)
    #: weight of the per-pair squared logit-distance term (BalanceBenchmark: 1)
    rs_weight: float = ranged(1.0, ge=0)
    #: BalanceBenchmark's ``modulation_ends``
    modulation_end: int = ranged(80, ge=0)


@dataclass
class PairTerms:
    """The two distillation terms of one pair of modalities, batch means, and the pair's sample weights."""

    kl: torch.Tensor
    rs: torch.Tensor
    weights: torch.Tensor


def pair_terms(logits_a: torch.Tensor, logits_b: torch.Tensor, labels: torch.Tensor) -> PairTerms:
    """Distillation between two modalities' logits ``(B, C)``.

    Per sample, ``q`` is each modality's softmax probability of the true class; the sample weight is
    ``w = |q_a − q_b|`` when either modality's prediction is right and 0 otherwise (constant: no
    gradient). The modality with the larger ``q`` is the teacher: ``KL(sg(p_teacher) ‖ p_student)`` over
    all classes distils it into the other. ``rs = mean_c (ℓ_a − ℓ_b)²`` pulls both logits together.
    Both terms are ``mean_i w_i · term_i``.
    """
    index = labels.unsqueeze(1)
    log_a, log_b = logits_a.log_softmax(1), logits_b.log_softmax(1)
    q_a, q_b = (x.detach().gather(1, index).squeeze(1).exp() for x in (log_a, log_b))
    right = (logits_a.argmax(1) == labels) | (logits_b.argmax(1) == labels)
    weights = (q_a - q_b).abs() * right
    a_teaches = (q_a >= q_b).unsqueeze(1)
    teacher = torch.where(a_teaches, log_a, log_b).detach()
    student = torch.where(a_teaches, log_b, log_a)
    kl = F.kl_div(student, teacher, log_target=True, reduction="none").sum(1)
    rs = (logits_a - logits_b).square().mean(1)
    return PairTerms((weights * kl).mean(), (weights * rs).mean(), weights)


def distillation_terms(
    modality_logits: Sequence[torch.Tensor], labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The KL and RS terms averaged over every pair of modalities (M(M−1)/2 pairs)."""
    pairs = [pair_terms(a, b, labels) for a, b in combinations(modality_logits, 2)]
    return torch.stack([p.kl for p in pairs]).mean(), torch.stack([p.rs for p in pairs]).mean()


@METHODS.register(
    "mbsd",
    "MBSD: per-sample self-distillation from the stronger modality into the weaker "
    "(Liu et al., WSDM 2023; BalanceBenchmark's port)",
)
class MBSD(Method):
    """``loss = CE(f, y) + Σ_m CE(ℓ_m, y) + kl_weight·L_KL + rs_weight·L_RS`` in the modulation window,
    plain ``CE(f, y)`` outside it.

    ``ℓ_m`` are the fusion head's per-modality logits; ``L_KL`` and ``L_RS`` are averaged over every pair
    of modalities (:func:`pair_terms`, :func:`distillation_terms`), so the method works for any M >= 2
    and needs no extra forward pass. Defaults (BalanceBenchmark's): all weights 1, window epochs 0–80.

    Differences from BalanceBenchmark's trainer, each a bug there: (1) its KL is ``F.kl_div(ps, pw)`` on
    the two true-class probabilities alone, a probability passed where a log-probability is expected,
    so it is not a divergence; here it is the KL of the full class distributions, teacher detached, as
    the paper's self-distillation describes. (2) Its weights ``w`` are written element by element into
    a tensor that stays in the graph, so the loss also pushes the gap ``|q_a − q_b|`` itself down; here
    they are constants. (3) Its two-modality RS term uses logits, its three-modality one probabilities;
    here logits for every M. (4) It calls a model method that no longer exists
    (``Unimodality_Calculate``) and cannot run at its HEAD. The per-sample Python loop is vectorised.

    Extra cost per step: M cross-entropies and M(M−1)/2 pair terms on (B, C) tensors; no extra pass.
    """

    Options = MBSDOptions

    def training_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        output = model(inputs)
        loss = F.cross_entropy(output.logits, labels)
        logs: dict[str, torch.Tensor] = {}
        o = self.options
        if in_window(step.epoch, o.modulation_start, o.modulation_end):
            logits = [output.modality_logits[m] for m in model.modalities]
            modality_ce = torch.stack([F.cross_entropy(x, labels) for x in logits]).sum()
            kl, rs = distillation_terms(logits, labels)
            loss = loss + modality_ce + o.kl_weight * kl + o.rs_weight * rs
            logs = {"mbsd_kl": kl.detach(), "mbsd_rs": rs.detach()}
        step.backward(loss)
        return StepResult(loss.detach(), output, logs)
