"""ARL: asymmetric representation learning — each encoder's update weighted by its inverse prediction variance.

Wei, Luo, Luo. "Improving Multimodal Learning via Imbalanced Learning". ICCV 2025 (arXiv 2507.10203).
Official code: github.com/shicaiwei123/ICCV2025-ARL @ 358af4f6782781ac3821527beae3321e77f9d31e
(``main_arl_variance.py`` ``train_epoch``, ``models/backbone.py`` ``GradScale``, ``cramed_arl.sh``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..nn.model import MultiModalModel
from ..options import CheckedOptions, log_uniform, ranged, uniform
from ..parallel import all_reduce_mean
from .base import METHODS, Method, MethodContext, StepResult
from .scores import mean_of_others

if TYPE_CHECKING:
    from ..training.step import StepContext

#: the floor on a modality's share of the summed entropy, times M (official: 0.3 for two modalities)
ENTROPY_SHARE_FLOOR = 0.6


@dataclass
class ARLOptions(CheckedOptions):
    #: weight of the unimodal cross-entropies once ARL is on (CREMA-D script 4.0; KS 3.0, AVE 5.0; argparse
    #: 1.0), searched over that span
    gamma: float = ranged(4.0, ge=0, search=uniform(1.0, 6.0))
    #: temperature of the softmax that turns the scores into weights (CREMA-D script 8.0; KS, AVE 4.0)
    temperature: float = ranged(8.0, ge=0, search=log_uniform(2.0, 16.0))
    #: epochs of plain ``CE + Σ CE_m`` first (official ``--start 5`` with ``epoch > start``: on from epoch 6)
    warmup_epochs: int = ranged(6, ge=0)
    #: clip all gradients to this global norm after the scaling (official 40); 0 turns it off
    clip_norm: float = ranged(40.0, ge=0)


def arl_weights(modality_logits: Sequence[torch.Tensor], temperature: float) -> torch.Tensor:
    """The ARL weights ``w`` (M,) from each modality's logits (B, C); detached, averaged over ranks.

    ``H_m`` = batch-mean entropy of ``softmax(ℓ_m)`` (the variance proxy), share ``ĥ_m = max(H_m/ΣH,
    0.6/M)``, inverse-variance share ``u_m = (1/ĥ_m)/Σ_j 1/ĥ_j``; ``b_m = Σ_k mean_i |ℓ_m[i,k]|`` (the
    bias proxy), share ``b̂_m = b_m/Σb``; score ``u_m · mean_{j≠m} b̂_j``; ``w = softmax(T·score)``.
    For M = 2 this is the official ``softmax(T·[b̂_v·u_a, b̂_a·u_v])``.
    """
    stacked = torch.stack([x.detach().float() for x in modality_logits])  # (M, B, C)
    log_p = stacked.log_softmax(2)
    entropy = -(log_p.exp() * log_p).sum(2).mean(1)
    magnitude = stacked.abs().mean(1).sum(1)
    entropy, magnitude = all_reduce_mean(torch.stack([entropy, magnitude])).unbind()
    count = len(modality_logits)
    share = (entropy / entropy.sum().clamp_min(1e-12)).clamp_min(ENTROPY_SHARE_FLOOR / count)
    inverse_variance = (1 / share) / (1 / share).sum()
    bias = magnitude / magnitude.sum().clamp_min(1e-12)
    return torch.softmax(temperature * inverse_variance * mean_of_others(bias), dim=0)


@METHODS.register(
    "arl", "ARL: unimodal CEs and encoder gradients × (1 + inverse-variance weight) (Wei et al., ICCV 2025)"
)
class ARL(Method):
    """Loss ``CE(ℓ) + γ·Σ_m CE(ℓ_m)``; after backward, encoder m's gradients × ``(1 + w_m)``.

    ``ℓ_m`` are the fusion head's per-modality logits (``output.modality_logits``; no extra parameters,
    as in the paper). ``w`` comes from :func:`arl_weights` on this batch. For the first
    ``warmup_epochs`` epochs the loss is ``CE(ℓ) + Σ_m CE(ℓ_m)`` and nothing is scaled, as in the
    official loop. All gradients are then clipped to ``clip_norm`` (official 40; 0 = off), every step.

    Differences from the official code: (1) the weights are applied. The official loop computes them
    but only ever writes 0.5 into the model (``audio_weight``/``visual_weight``), so after warm-up every
    encoder gradient is ×1.5; and its ``GradScale`` backward multiplies by the tuple
    ``ctx.saved_tensors``, which fails on current PyTorch. Here encoder m's parameter gradients are
    multiplied by ``1 + w_m`` after the backward pass — the same as a correct identity-forward op on the
    encoder output, since the encoder's parameters get gradient only through that output — with this
    step's weights (the official op would have read weights set one step earlier). (2) The official
    unimodal logits put the full head bias on each modality (the other modality's input zeroed);
    erlmr's concat logits give each bias/M, so the |logit| proxy differs by that constant.
    (3) The official gate also needs the previous test evaluation's unimodal accuracies to be non-zero
    (true after the first epoch); there is no test-split peeking here. M > 2: the bias share is the mean
    over the other modalities and the entropy-share floor 0.6/M (0.3 for M = 2).
    """

    Options = ARLOptions

    def __init__(self, model: MultiModalModel, options: ARLOptions, context: MethodContext):
        super().__init__(model, options, context)
        self.modalities = list(model.modalities)
        self.weights = torch.zeros(len(self.modalities))

    @property
    def active(self) -> bool:
        return self.epoch >= self.options.warmup_epochs

    def training_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        output = model(inputs)
        fused = F.cross_entropy(output.logits, labels)
        unimodal = torch.stack([F.cross_entropy(output.modality_logits[m], labels) for m in self.modalities])
        loss = fused + (self.options.gamma if self.active else 1.0) * unimodal.sum()
        step.backward(loss)
        logs = {f"arl_loss_{m}": x.detach() for m, x in zip(self.modalities, unimodal)}
        return StepResult(loss.detach(), output, logs)

    def modify_gradients(self, model: MultiModalModel, result: StepResult, labels: torch.Tensor) -> None:
        """Encoder gradients × (1 + w_m) once ARL is on, then the official clipping."""
        if self.active:
            logits = [result.output.modality_logits[m] for m in self.modalities]
            self.weights = arl_weights(logits, self.options.temperature)
            for m, w in zip(self.modalities, self.weights):
                grads = [p.grad for p in model.encoders[m].parameters() if p.grad is not None]
                if grads:
                    torch._foreach_mul_(grads, (1 + w).to(grads[0].device, grads[0].dtype))
        else:
            self.weights = torch.zeros(len(self.modalities))
        result.logs.update({f"arl_weight_{m}": w for m, w in zip(self.modalities, self.weights)})
        if self.options.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.options.clip_norm)
