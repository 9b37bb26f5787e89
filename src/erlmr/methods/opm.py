"""OPM: on-the-fly prediction modulation — drop the dominant modality's features with a dynamic probability.

Wei, Hu, Du, Wen. "On-the-fly Modulation for Balanced Multimodal Learning". IEEE TPAMI 2024
(ieeexplore document 10694738). Official code: github.com/GeWu-Lab/BML_TPAMI2024 @ 4b3aa4f
(``code/models/Classifier.py`` ``calcu_q``, ``Modality_drop``, ``Classifier.forward``; ``code/main.py``
``train``; ``code/scripts/train_opm.sh``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

import torch
import torch.nn.functional as F

from ..nn.model import MultiModalModel
from ..options import CheckedOptions, ranged, uniform
from .base import METHODS, Method, MethodContext, StepResult
from .scores import mean_of_others, true_class_scores

if TYPE_CHECKING:
    from ..training.step import StepContext


@dataclass
class OPMOptions(CheckedOptions):
    #: q_base, the drop probability of a modality just ahead (argparse and train_opm.sh: 0.5)
    q_base: float = ranged(0.5, ge=0, le=1, search=uniform(0.2, 0.8))
    #: λ: how much a larger lead raises the probability, up to q_base·(1 + λ)
    lam: float = ranged(0.5, ge=0, search=uniform(0.0, 1.0))
    #: probability that a batch is modulated at all
    p_exe: float = ranged(0.7, ge=0, le=1)
    #: epochs of plain training first (official: no drop while epoch <= 5)
    warmup_epochs: int = ranged(6, ge=0)


def drop_probabilities(scores: torch.Tensor, q_base: float, lam: float) -> torch.Tensor:
    """``q_m = clip(q_base·(1 + λ·tanh(ρ_m − 1)), 0, 1)`` for every modality with ``ρ_m > 1``, else 0,
    where ``ρ_m = s_m / mean_{j≠m} s_j``. The weakest modality always has ``ρ ≤ 1``, so it is never dropped."""
    ratios = scores / mean_of_others(scores)
    q = q_base * (1 + lam * torch.tanh(torch.relu(ratios - 1)))
    return torch.where(ratios > 1, q, torch.zeros_like(q)).clamp(0, 1)


def keep_masks(q: torch.Tensor, batch: int, p_exe: float) -> torch.Tensor | None:
    """With probability ``p_exe`` a ``(batch, M)`` 0/1 mask with ``keep[i, m] ~ Bernoulli(1 − q_m)``;
    otherwise None (the batch is not modulated). Draws from the global torch RNG."""
    if float(torch.rand(())) >= p_exe:
        return None
    return torch.bernoulli((1 - q).expand(batch, -1).contiguous())


@METHODS.register(
    "opm",
    "OPM: drop the dominant modality's features with a probability that grows with its lead (Wei et al., TPAMI 2024)",
)
class OPM(Method):
    """Feed-forward modulation: the modality ahead on the batch is dropped per sample.

    **Scores** as in OGM, from the unmodulated per-modality logits of the fusion head (for the concat
    head ``z_m W_mᵀ + b/M``, the official ``b/2`` for two modalities): ``s_m = Σ_i softmax(ℓ_m)_i[y_i]``,
    summed over ranks. **Drop probabilities** :func:`drop_probabilities`. **Drop**, on a batch chosen
    with probability ``p_exe``: every sample keeps modality m with probability ``1 − q_m``; each
    fusion-head input ``z_m`` (after the Euler representation, when present) is multiplied by its
    keep bit and by ``1/(1 − θ)``, ``θ = Σ_m D_m q_m / Σ_m D_m`` (D_m the widths), the official
    rescaling (its custom autograd op has the same forward and backward as this product). The loss is
    cross-entropy of the head on the modulated features. Epochs ``< warmup_epochs`` and prediction
    use the plain model.

    Defaults: q_base 0.5, λ 0.5, p_exe 0.7 (argparse and ``train_opm.sh``; ``config.py``'s q_base
    0.4 is overridden by argparse), warm-up 6 epochs (``warm_up = 1 if epoch <= 5``). The official
    code removes samples that lost every modality; with the rule above the weakest modality is
    never dropped, so no such sample exists, for any M. M > 2 divides by the mean of the other
    modalities' scores (BalanceBenchmark divides by their sum, so a balanced triple never drops).
    Extra cost per step: one more fusion-head evaluation and B·M Bernoulli draws.
    """

    Options = OPMOptions

    def __init__(self, model: MultiModalModel, options: OPMOptions, context: MethodContext):
        super().__init__(model, options, context)
        self.modalities = list(model.modalities)
        self.widths = torch.tensor(model.head.in_features, dtype=torch.float64)

    def training_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        output = model(inputs)
        logits, logs = output.logits, {}
        if self.epoch >= self.options.warmup_epochs:
            scores = true_class_scores([output.modality_logits[m] for m in self.modalities], labels)
            q = drop_probabilities(scores, self.options.q_base, self.options.lam)
            keep = keep_masks(q, len(labels), self.options.p_exe)
            if keep is not None:
                theta = float((self.widths * q.double().cpu()).sum() / self.widths.sum())
                features = [
                    output.features[m] * keep[:, i : i + 1].to(output.features[m]) / (1 - theta)
                    for i, m in enumerate(self.modalities)
                ]
                logits = model.head(features).logits
            dropped = torch.zeros(len(self.modalities)) if keep is None else 1 - keep.mean(0).cpu()
            logs = {f"opm_q_{m}": q[i].detach() for i, m in enumerate(self.modalities)}
            logs.update({f"opm_dropped_{m}": dropped[i] for i, m in enumerate(self.modalities)})
        loss = F.cross_entropy(logits, labels)
        step.backward(loss)
        return StepResult(loss.detach(), dataclasses.replace(output, logits=logits.detach()), logs)
