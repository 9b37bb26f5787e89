"""AMSS: adaptively masked subnetworks — each encoder updates only a sampled share of its units.

Yang, Pan, Jiang, Xu, Tang. "Learning to Rebalance Multi-Modal Optimization by Adaptively Masking
Subnetworks". IEEE TPAMI 47(6), 2025, doi 10.1109/TPAMI.2025.3547417 (arXiv 2404.08347).
Official code: github.com/njustkmg/TPAMI-AMSS @ 3161ecc72f9cb8f8a6b3abed6d863a03339dd9e9
(``AMSS/train_test.py``: ``modal_caculate_MI`` and the masking loop of ``train_epoch``;
``AMSS_rod/train_nv.py`` for the three-modality coefficient; the README's commands for the defaults).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..nn.model import ModelOutput, MultiModalModel
from ..options import CheckedOptions, log_uniform, one_of, ranged
from ..parallel import all_reduce_mean, all_reduce_sum
from .base import METHODS, Method, MethodContext, StepResult

#: the keep ratio of every modality when some modality's information estimate is not positive (official)
FALLBACK_KEEP = 0.5


@dataclass
class AMSSOptions(CheckedOptions):
    #: softmax temperature T over the modalities' information rates (argparse default; A-V README commands keep it)
    temperature: float = ranged(0.2, gt=0, search=log_uniform(0.05, 1.0))
    #: added to H(Y) − H(Y|X_m) before dividing by H(X_m) (0.5 in the audio-visual code)
    offset: float = ranged(0.5)
    #: added to every keep ratio before clamping (README: 0 for audio-visual and NVGesture)
    bias: float = ranged(0.0)
    min_keep: float = ranged(0.1, gt=0, le=1)
    max_keep: float = ranged(0.9, gt=0, le=1)
    #: unit importance: squared gradient (gn), divided by the squared weight (gn_wn), or its root (sqrt_gn)
    importance: str = one_of("gn", ("gn", "gn_wn", "sqrt_gn"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_keep > self.max_keep:
            raise ConfigError(f"min_keep must be <= max_keep, got {self.min_keep} and {self.max_keep}")


def keep_ratios(
    scores: torch.Tensor, feature_entropies: torch.Tensor, label_entropy: torch.Tensor, options: AMSSOptions
) -> torch.Tensor:
    """Each modality's share of units to update, ``(M,)``.

    ``scores`` are ``−CE(logits_m, y)`` (≈ −H(Y|X_m)); the information rate is
    ``r_m = (s_m + H(Y) + offset) / H(X_m)`` and ``c_m = clamp(1 − softmax(r / T)_m + bias)``: the
    modality that carries more label information per unit of feature entropy updates fewer units.
    If any ``s_m + H(Y) + offset <= 0`` every ratio is 0.5; a NaN ratio becomes 0.5.
    """
    information = scores + label_entropy + options.offset
    if bool((information <= 0).any()):
        return torch.full_like(scores, FALLBACK_KEEP)
    rates = information / feature_entropies
    keep = (1 - torch.softmax(rates / options.temperature, dim=0) + options.bias).clamp(
        options.min_keep, options.max_keep
    )
    return torch.nan_to_num(keep, nan=FALLBACK_KEEP)


def label_entropy(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Entropy (nats) of the batch's label histogram, counted over all ranks."""
    counts = all_reduce_sum(torch.bincount(labels, minlength=num_classes).float())
    probabilities = counts[counts > 0] / counts.sum()
    return -(probabilities * probabilities.log()).sum()


def feature_entropy(features: torch.Tensor) -> torch.Tensor:
    """Batch mean of the entropy of ``softmax(z)`` taken over the feature dimensions (≈ H(X_m))."""
    log_p = features.float().log_softmax(dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean()


@METHODS.register(
    "amss",
    "AMSS: each encoder updates a sampled share of its units, fewer for the more informative modality "
    "(Yang et al., TPAMI 2025)",
)
class AMSS(Method):
    """After the backward pass, mask every encoder weight tensor's gradient down to sampled units.

    **Keep ratios** (per batch, :func:`keep_ratios`): ``s_m = −CE(logits_m, y)`` from the modality's own
    logits (``output.modality_logits``), ``H(X_m)`` the softmax entropy over the fusion-head input's
    dimensions (``output.features``), ``H(Y)`` the entropy of the batch's label histogram. For two
    modalities ``1 − softmax(r/T)_m`` is exactly the official ``e^{t_other}/(e^{t_a} + e^{t_v})``; for
    M > 2 it is the authors' own three-modality formula (``train_nv.py``).

    **Masks.** For every parameter of ``model.encoders[m]`` with at least two dimensions, the units are
    its rows (Linear output features, convolution filters); unit j's importance is
    ``u_j = Σ g_j²`` over the row (``importance``); ``⌈n·c_m⌉`` distinct units are drawn with
    probability ∝ u (``torch.multinomial`` without replacement, the official ``Adaptive`` mode) and the
    gradients of all other units are set to zero. A tensor with no more units with a gradient than it
    keeps is left as it is. Draws come from a generator of its own seeded with ``torch.initial_seed()``
    (state in the checkpoint), so all ranks draw the same masks and the global RNG is untouched.

    Deviations from the official code (docs/methods.md): every ≥ 2-D encoder tensor is masked, not only
    the convolutions of the ResNets' residual blocks, because erlmr encoders are of any kind; ``H(Y)``
    is the true entropy of the label histogram (official: ``CrossEntropyLoss(p, p)``, which treats the
    histogram as logits); the fusion-head masking (``mask_ffn``) is not implemented — the audio-visual
    code computes its masks but never applies them, so its published numbers mask the encoders only.
    As a pure gradient modulator it composes after any step method: ``erlmr+amss``, ``joint+amss``.
    """

    Options = AMSSOptions
    modulates_gradients = True
    #: the registered name, the prefix of the logged coefficients
    name = "amss"

    def __init__(self, model: MultiModalModel, options: AMSSOptions, context: MethodContext):
        super().__init__(model, options, context)
        self.modalities = list(model.modalities)
        self.num_classes = context.num_classes
        self.sampler = torch.Generator(device=context.device).manual_seed(torch.initial_seed())
        self.coefficients = torch.ones(len(self.modalities))

    @property
    def last_coefficients(self) -> dict[str, float]:
        """Each modality's keep ratio at the last step."""
        return dict(zip(self.modalities, self.coefficients.tolist()))

    def compute_keep_ratios(self, output: ModelOutput, labels: torch.Tensor) -> torch.Tensor:
        """This batch's keep ratios from statistics averaged over ranks (so every rank masks alike)."""
        logits = [output.modality_logits[m].detach().float() for m in self.modalities]
        scores = all_reduce_mean(torch.stack([-F.cross_entropy(x, labels) for x in logits]))
        entropies = all_reduce_mean(
            torch.stack([feature_entropy(output.features[m].detach()) for m in self.modalities])
        )
        return keep_ratios(scores, entropies, label_entropy(labels, self.num_classes), self.options)

    def modify_gradients(self, model: MultiModalModel, result: StepResult, labels: torch.Tensor) -> None:
        keep = self.compute_keep_ratios(result.output, labels)
        for m, ratio in zip(self.modalities, keep.tolist()):
            for p in model.encoders[m].parameters():
                if p.grad is not None and p.dim() >= 2:
                    self.mask_gradient(p, ratio)
        self.coefficients = keep.detach().cpu()
        result.logs.update({f"{self.name}_coefficient_{m}": k for m, k in zip(self.modalities, keep.detach())})

    @torch.no_grad()
    def mask_gradient(self, parameter: torch.Tensor, ratio: float) -> None:
        """Multiply each row of ``parameter.grad`` by its unit weight (0 for the units not drawn)."""
        grad = parameter.grad
        assert grad is not None, "modify_gradients masks only the parameters that have gradients"
        importance = unit_importance(grad, parameter, self.options.importance)
        weights = self.unit_weights(importance, math.ceil(len(importance) * ratio))
        grad.mul_(weights.to(grad.dtype).view(-1, *([1] * (grad.dim() - 1))))

    def unit_weights(self, importance: torch.Tensor, count: int) -> torch.Tensor:
        """1 on ``count`` units drawn ∝ importance without replacement, 0 elsewhere."""
        alive = importance > 0
        if int(alive.sum()) <= count:  # every unit with a gradient is kept; the others are zero anyway
            return alive.float()
        drawn = torch.multinomial(importance, count, replacement=False, generator=self.sampler)
        return torch.zeros_like(importance).index_fill_(0, drawn, 1.0)

    def get_extra_state(self) -> dict:
        return {"sampler": self.sampler.get_state()}

    def set_extra_state(self, state: dict) -> None:
        self.sampler.set_state(state["sampler"].cpu())


def unit_importance(grad: torch.Tensor, parameter: torch.Tensor, mode: str) -> torch.Tensor:
    """Per row (unit) of a weight tensor: the summed squared gradient, or its variants, in float32."""
    squared = grad.float().pow(2).flatten(1).sum(1)
    if mode == "gn_wn":
        weight = parameter.detach().float().pow(2).flatten(1).sum(1)
        return squared / weight.clamp_min(torch.finfo(torch.float32).tiny)
    if mode == "sqrt_gn":
        return squared.sqrt()
    return squared
