"""ARM: asymmetric reinforcing — features rescaled by mutual-information contribution scores before fusion.

Gao, Cao, Zhu, Wang, Hu. "Asymmetric Reinforcing against Multi-modal Representation Bias". AAAI 2025
(39(16):16754-16762; arXiv 2501.01240). Official code: github.com/Gao-xiyuan/ARM @
a96d0ad67a7a547efb15cb4dc7b52f97f7ab0e83 (``mmpretrain/models/heads/linear_head.py`` ``forward``,
``mmpretrain/models/heads/cls_head.py`` ``train_predict``, ``mmpretrain/models/necks/MI_tool.py``,
``mmpretrain/models/necks/gap.py``, ``configs/arm/resnet18_ks.py``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Collection, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.model import ModelOutput, MultiModalModel
from ..options import CheckedOptions, one_of, ranged
from ..parallel import all_reduce_mean
from .base import METHODS, Method, MethodContext, StepResult, equal_feature_width
from .scores import mean_of_others

if TYPE_CHECKING:
    from ..training.step import StepContext

#: contribution scores below this count as this, so that a ratio stays finite and positive
MIN_SCORE = 1e-6


@dataclass
class ARMOptions(CheckedOptions):
    #: equal-width bins per axis of the 2-D histogram of the normalised mutual information (official 30)
    mi_bins: int = ranged(30, ge=2)
    #: equal-width bins per variable of the conditional mutual information's histogram (official 2)
    cmi_bins: int = ranged(2, ge=2)
    #: whose true-class confidence weighs modality m's interaction term: "others" (the mean of the other
    #: modalities', as the official code does) or "own" (m's)
    interaction_confidence: str = one_of("others", ("others", "own"))
    #: std of a normal initialisation of the method's two layers (official: 0.01, mmpretrain's
    #: ``init_cfg``); 0 keeps PyTorch's Linear default
    init_std: float = ranged(0.0, ge=0)


def bin_indices(values: torch.Tensor, bins: int) -> torch.Tensor:
    """Each value's bin among ``bins`` equal-width bins over [min, max] (the maximum in the last bin)."""
    low, high = values.min(), values.max()
    if not high > low:
        return torch.zeros_like(values, dtype=torch.long)
    return ((values - low) / (high - low) * bins).long().clamp_(0, bins - 1)


def entropy_of(indices: Sequence[torch.Tensor], bins: Sequence[int]) -> torch.Tensor:
    """Entropy (nats) of the empirical joint distribution of the binned variables ``indices``."""
    flat = torch.zeros_like(indices[0])
    for index, size in zip(indices, bins):
        flat = flat * size + index
    counts = torch.bincount(flat, minlength=math.prod(bins)).double()
    p = counts[counts > 0] / counts.sum()
    return -(p * p.log()).sum()


def normalized_mutual_information(x: torch.Tensor, y: torch.Tensor, bins: int) -> torch.Tensor:
    """``2·I(X;Y)/(H(X) + H(Y))`` from a ``bins × bins`` histogram of the element pairs of ``x`` and ``y``."""
    ix, iy = bin_indices(x.flatten(), bins), bin_indices(y.flatten(), bins)
    hx, hy, hxy = entropy_of([ix], [bins]), entropy_of([iy], [bins]), entropy_of([ix, iy], [bins, bins])
    total = hx + hy
    return 2 * (total - hxy) / total if total > 0 else total.new_zeros(())


def normalized_conditional_mutual_information(
    x: torch.Tensor, y: torch.Tensor, conditions: Sequence[torch.Tensor], bins: int
) -> torch.Tensor:
    """``I(X;Y|Z)/(H(X|Z) + H(Y|Z))`` from a histogram with ``bins`` bins per variable; Z is the joint
    value of every tensor in ``conditions``, each binned on its own.

    ``H(A|Z) = H(A,Z) − H(Z)`` and ``I(X;Y|Z) = H(X|Z) + H(Y|Z) − H(X,Y|Z)``.
    """
    ix, iy = bin_indices(x.flatten(), bins), bin_indices(y.flatten(), bins)
    iz = [bin_indices(z.flatten(), bins) for z in conditions]
    zb = [bins] * len(iz)
    hz = entropy_of(iz, zb)
    hx_z = entropy_of([ix, *iz], [bins, *zb]) - hz
    hy_z = entropy_of([iy, *iz], [bins, *zb]) - hz
    hxy_z = entropy_of([ix, iy, *iz], [bins, bins, *zb]) - hz
    total = hx_z + hy_z
    return (total - hxy_z) / total if total > 0 else total.new_zeros(())


def true_class_confidence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Batch mean of the softmax probability of the true class."""
    return logits.softmax(1).gather(1, labels.unsqueeze(1)).mean()


@METHODS.register(
    "arm", "ARM: features rescaled by MI/CMI contribution scores, the weaker reinforced (Gao et al., AAAI 2025)"
)
class ARM(Method):
    """Fused logits ``f(F([r_1·z_1; …; r_M·z_M]))`` with ``r_m = mean_{j≠m} s_j / s_m``; loss ``CE``.

    ``z_m`` are the fusion-head inputs (``output.features``; every width d must match, as the official
    pairing of feature elements needs), ``F = Linear(M·d, d)`` (``fuse``) and ``f = Linear(d, C)``
    (``classifier``, shared by the fused and the per-modality logits ``f(z_m)``) belong to the method;
    the model's own fusion head is unused. Per training batch, without gradients:

    - ``z_c = F([z_1; …; z_M])``, the method's fusion layer on the features before reinforcement;
    - ``p_c``, ``p_m``: batch-mean true-class probabilities of ``f(z_c)``, ``f(z_m)``;
    - ``NMI_m`` of the element pairs of ``z_m`` and ``z_c`` (``mi_bins``² histogram);
      ``NCMI_m`` of ``z_m`` and ``z_c`` given all other modalities' features (``cmi_bins`` per variable);
    - score ``s_m = p_c·NMI_m + q_m·(NMI_m − NCMI_m)``, ``q_m = mean_{j≠m} p_j`` (official) or ``p_m``;
      clamped at 1e-6. The weaker modality (smaller s) gets r > 1: its feature and, through the chain
      rule, its encoder's gradient are amplified; the stronger one's attenuated.

    ``predict`` never sees labels: it uses the mean ratios of the last completed training epoch
    (declared state), so a sample's prediction does not depend on its batch.

    Differences from the official code: (1) the official test-time forward weights the modalities with
    the *test* labels' confidences. (2) Its "conditional MI" divides the joint histogram by p(z)
    broadcast along the wrong axis and sums ``−p log p`` of those ratios without weighting by p(z); here
    it is the conditional MI of the same histograms. (3) Its ``z_c`` comes from a separate neck layer
    that never gets a gradient (a fixed random projection); here it is the trained fusion layer F
    applied to the un-reinforced features, i.e. what the model really fuses when the ratios are 1 — no
    extra parameters and no invented auxiliary loss. (4) Under DDP every rank takes the statistics on
    its shard and they are averaged over ranks (the same ratios everywhere). The paper's balanced
    min-max loss and dynamic re-sampling are not in the released code and the paper's method section
    was not available, so they are left out. M > 2: Z is the joint value of the other modalities'
    features, ``q_m`` the mean of their confidences, and the ratio is to the mean of the others' scores.
    (5) F and f keep PyTorch's Linear initialisation (std 1/√(3·fan_in): 0.018 and 0.026 at the official
    widths 1024 and 512, the scale of the official Normal(0, 0.01)); a fixed std of 0.01 at erlmr's
    small widths starts both stacked layers near zero, where a short run does not leave the saddle
    (BasicMotions: loss still ln 4 after 6 epochs). ``init_std: 0.01`` gives the official init.
    """

    Options = ARMOptions
    fuse: nn.Linear
    classifier: nn.Linear
    ratio_sum: torch.Tensor
    ratio_steps: torch.Tensor
    test_ratios: torch.Tensor

    def __init__(self, model: MultiModalModel, options: ARMOptions, context: MethodContext):
        super().__init__(model, options, context)
        width = equal_feature_width(
            model,
            "arm pairs the elements of every modality's feature with those of the fused one, so the feature "
            "widths must match",
        )
        self.modalities = list(model.modalities)
        count = len(self.modalities)
        self.fuse = nn.Linear(count * width, width)
        self.classifier = nn.Linear(width, context.num_classes)
        if options.init_std > 0:
            for layer in (self.fuse, self.classifier):
                nn.init.normal_(layer.weight, std=options.init_std)
                nn.init.zeros_(layer.bias)
        self.add_state("ratio_sum", torch.zeros(count))
        self.add_state("ratio_steps", torch.zeros((), dtype=torch.long))
        self.add_state("test_ratios", torch.ones(count))

    @torch.no_grad()
    def contribution_scores(self, features: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """The scores ``s_m`` (M,) of this batch; the statistics behind them are averaged over ranks."""
        o, count = self.options, len(features)
        fused = self.fuse(torch.cat(list(features), dim=1))
        confidences = [true_class_confidence(self.classifier(x), labels).double() for x in (fused, *features)]
        nmi = [normalized_mutual_information(z, fused, o.mi_bins) for z in features]
        ncmi = [
            normalized_conditional_mutual_information(z, fused, [*features[:m], *features[m + 1 :]], o.cmi_bins)
            for m, z in enumerate(features)
        ]
        stats = all_reduce_mean(torch.stack([*confidences, *nmi, *ncmi]))
        fused_confidence, own = stats[0], stats[1 : count + 1]
        nmi_t, ncmi_t = stats[count + 1 : 2 * count + 1], stats[2 * count + 1 :]
        weight = mean_of_others(own) if o.interaction_confidence == "others" else own
        return (fused_confidence * nmi_t + weight * (nmi_t - ncmi_t)).clamp_min(MIN_SCORE).float()

    def fused_logits(self, features: Sequence[torch.Tensor], ratios: torch.Tensor) -> torch.Tensor:
        """``f(F([r_1·z_1; …; r_M·z_M]))``."""
        scaled = [r * z for r, z in zip(ratios.to(features[0].dtype), features)]
        return self.classifier(self.fuse(torch.cat(scaled, dim=1)))

    def training_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        output = model(inputs)
        features = [output.features[m] for m in self.modalities]
        scores = self.contribution_scores(features, labels)
        ratios = mean_of_others(scores) / scores
        logits = self.fused_logits(features, ratios)
        loss = F.cross_entropy(logits, labels)
        step.backward(loss)
        self.ratio_sum += ratios.to(self.ratio_sum.device)
        self.ratio_steps += 1
        logs = {f"arm_ratio_{m}": r for m, r in zip(self.modalities, ratios)}
        logs.update({f"arm_score_{m}": s for m, s in zip(self.modalities, scores)})
        return StepResult(loss.detach(), self.method_output(output, logits.detach()), logs)

    def method_output(self, model_output: ModelOutput, logits: torch.Tensor) -> ModelOutput:
        """``model_output`` with the method's fused logits and ``f(z_m)`` for each present modality."""
        with torch.no_grad():
            modality_logits = {m: self.classifier(model_output.features[m]) for m in model_output.encoded}
        return dataclasses.replace(model_output, logits=logits, modality_logits=modality_logits)

    def on_epoch_end(self, model: MultiModalModel, epoch: int) -> dict[str, float]:
        """The epoch's mean ratios become the ones ``predict`` uses; the running sums start again."""
        if self.ratio_steps > 0:
            self.test_ratios.copy_(self.ratio_sum / self.ratio_steps)
        self.ratio_sum.zero_()
        self.ratio_steps.zero_()
        return {f"arm_test_ratio_{m}": float(r) for m, r in zip(self.modalities, self.test_ratios)}

    def predict(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], absent: Collection[str] = ()
    ) -> ModelOutput:
        output = model(inputs, absent=absent)
        features = [output.features[m] for m in self.modalities]  # zeros for the absent ones
        return self.method_output(output, self.fused_logits(features, self.test_ratios))
