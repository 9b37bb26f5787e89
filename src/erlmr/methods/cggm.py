"""CGGM: classifier-guided gradient modulation of magnitude and direction.

Guo, Jin, Chen, Zhao. "Classifier-guided Gradient Modulation for Enhanced Multimodal Learning".
NeurIPS 2024 (arXiv 2411.01409). Official code: github.com/zrguo/CGGM @ 21e428cb7e666b8640453557380bb6414b7d246f
(``src/msatrain.py`` and ``src/foodtrain.py`` ``train``, ``src/eval_metrics.py`` ``cal_cos``,
``src/msamodel.py`` ``ClassifierGuided``; defaults from ``run/*_run.py`` and the README command).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..nn.fusion import FusionHead
from ..nn.model import MultiModalModel
from ..options import CheckedOptions, log_uniform, ranged, uniform
from ..parallel import all_reduce_mean, all_reduce_mean_lists
from .base import METHODS, Method, MethodContext, StepResult

#: the official code adds this to the summed improvement before dividing by it
IMPROVEMENT_EPSILON = 1e-8


@dataclass
class CGGMOptions(CheckedOptions):
    #: ρ: every encoder gradient is scaled by ρ·B_m (1.3 for MOSI, IEMOCAP and Food-101 in run/*_run.py)
    rho: float = ranged(1.3, gt=0, search=uniform(1.0, 2.0))
    #: λ: weight of the direction loss (0.2 in the README command and for MOSI/IEMOCAP; Food-101 0.05)
    lam: float = ranged(0.2, ge=0, search=log_uniform(0.02, 0.5))
    #: clip the model's gradients to this global norm after modulation (official --clip 0.8); 0 = off
    clip_norm: float = ranged(0.8, ge=0)
    #: |Σ_m Δ_m| below this → B_m = 1 and no scaling that step (not in the official code; 0 = off)
    min_total_improvement: float = ranged(1e-3, ge=0)


def balance_coefficients(improvements: torch.Tensor, min_total: float) -> tuple[torch.Tensor, bool]:
    """``B_m = (S − Δ_m)/S`` with ``S = Σ_j Δ_j + 1e-8`` (official), and whether the guard fired:
    when ``|Σ Δ| < min_total`` the ratio is meaningless (it flips sign and explodes), so B = 1."""
    total = improvements.sum()
    if float(total.abs()) < min_total:
        return torch.ones_like(improvements), True
    total = total + IMPROVEMENT_EPSILON
    return (total - improvements) / total, False


def direction_loss(
    balance: torch.Tensor, classifier_weights: list[torch.Tensor], fused_weight: torch.Tensor
) -> torch.Tensor:
    """``L_gd = (Σ|B_m| − Σ B_m·cos(vec W_m, vec W_f)) / M``; the classifiers' weights are constants."""
    cosines = torch.stack(
        [F.cosine_similarity(w.detach().flatten(), fused_weight.flatten(), dim=0) for w in classifier_weights]
    )
    return (balance.abs().sum() - (balance * cosines).sum()) / len(classifier_weights)


def output_layer(head: FusionHead) -> list[nn.Parameter]:
    """The weights whose column-concatenation is the fusion head's output layer ``W_f`` (C, h)."""
    weights = head.output_weights()
    if not weights:
        raise ConfigError(
            f"cggm pulls the fusion head's output layer towards its classifiers, but {type(head).__name__} names no "
            "output weights (FusionHead.output_weights); "
            "use another model.fusion or give the head an output_weights method"
        )
    return weights


@METHODS.register(
    "cggm",
    "CGGM: per-modality classifiers set encoder gradient scales and pull the fused output layer "
    "(Guo et al., NeurIPS 2024)",
)
class CGGM(Method):
    """After the backward pass: train one classifier per modality on the detached features, scale each
    encoder's gradient by how little its classifier improved, and add a direction term to the head.

    **Classifiers** ``c_m = Linear(d_m, h) → ReLU → Linear(h, C)`` on ``output.features[m].detach()``,
    ``h`` the width of the fusion head's output layer ``W_f`` (so that the cosine below is defined),
    trained on ``Σ_m CE(c_m(z_m), y)``; their gradients never reach the encoders. They are parameters of
    the method, so the run's optimiser updates them with everything else (the official code gives them an
    Adam of their own, lr 5e-4: a second optimiser inside a method would escape the run's optimiser
    settings, schedule and checkpoint). The official classifiers are 2-layer transformers on the
    encoders' token sequences; erlmr's features are vectors, so an MLP of the same output shape stands in.

    **Magnitude.** ``a_m`` = accuracy of ``c_m`` on this batch (before its update, averaged over ranks),
    ``Δ_m = a_m − a_m(previous step)`` (``a = 0`` before the first step, kept across epochs),
    ``B_m = (ΣΔ − Δ_m)/ΣΔ`` (:func:`balance_coefficients`): the modality whose classifier improved least
    gets the largest B. Every gradient of ``model.encoders[m]`` is multiplied by ``ρ·B_m``.

    **Direction.** ``W_f.grad += λ·∂L_gd/∂W_f`` with :func:`direction_loss`, the cosine taken between the
    classifiers' and the fusion head's output-layer *weights* as in the official ``cal_cos`` (the paper
    speaks of gradient directions; the code, which produced its numbers, compares weights).

    Then all model gradients are clipped to ``clip_norm`` (official 0.8). Deviations (docs/methods.md):
    L_gd uses this step's B and weights (official: the previous step's, added to the next loss — a
    one-step lag); when ``|ΣΔ| < min_total_improvement`` B = 1 and the encoders are not scaled (official
    B explodes and changes sign there, e.g. Δ = (0.02, −0.0199) gives B ≈ (−199, 200)).
    As a pure gradient modulator it composes after any step method: ``erlmr+cggm``, ``joint+cggm``.
    """

    Options = CGGMOptions
    # Buffers (add_state), typed: nn.Module types an attribute it does not know as a tensor or a module.
    previous_accuracy: torch.Tensor
    modulates_gradients = True

    def __init__(self, model: MultiModalModel, options: CGGMOptions, context: MethodContext):
        super().__init__(model, options, context)
        self.modalities = list(model.modalities)
        width = sum(w.shape[1] for w in output_layer(model.head))
        self.classifiers = nn.ModuleDict(
            {
                m: nn.Sequential(nn.Linear(d, width), nn.ReLU(), nn.Linear(width, context.num_classes))
                for m, d in zip(self.modalities, model.head.in_features)
            }
        ).to(context.device)
        self.add_state("previous_accuracy", torch.zeros(len(self.modalities)))
        self.coefficients = torch.ones(len(self.modalities))

    @property
    def last_coefficients(self) -> dict[str, float]:
        """Each modality's encoder-gradient scale ρ·B_m at the last step (1 when the guard fired)."""
        return dict(zip(self.modalities, self.coefficients.tolist()))

    def modify_gradients(self, model: MultiModalModel, result: StepResult, labels: torch.Tensor) -> None:
        accuracy = self.train_classifiers(result, labels)
        balance, guarded = balance_coefficients(accuracy - self.previous_accuracy, self.options.min_total_improvement)
        self.previous_accuracy.copy_(accuracy)
        logs = {f"cggm_classifier_accuracy_{m}": a for m, a in zip(self.modalities, accuracy)}
        if self.options.lam > 0:
            logs["cggm_direction_loss"] = self.add_direction_gradient(model, balance)
        scales = torch.ones_like(balance) if guarded else self.options.rho * balance
        for m, scale in zip(self.modalities, scales):
            grads = [p.grad for p in model.encoders[m].parameters() if p.grad is not None]
            if grads:
                torch._foreach_mul_(grads, scale.to(grads[0].device))
        if self.options.clip_norm > 0:  # the model's gradients only, as official (not the classifiers')
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.options.clip_norm)
        self.coefficients = scales.detach().cpu()
        logs.update({f"cggm_coefficient_{m}": k for m, k in zip(self.modalities, scales.detach())})
        logs["cggm_guard"] = torch.tensor(float(guarded))
        result.logs.update(logs)

    def train_classifiers(self, result: StepResult, labels: torch.Tensor) -> torch.Tensor:
        """The classifiers' gradients (averaged over ranks) into ``.grad``, for the run's optimiser to apply;
        their accuracies on this batch before that update, (M,)."""
        with torch.enable_grad():
            logits = [self.classifiers[m](result.output.features[m].detach()) for m in self.modalities]
            loss = torch.stack([F.cross_entropy(x.float(), labels) for x in logits]).sum()
            params = list(self.classifiers.parameters())
            grads = list(torch.autograd.grad(loss, params))
        all_reduce_mean_lists([grads])  # the classifiers see only this rank's features
        for p, g in zip(params, grads):
            p.grad = g
        correct = torch.stack([(x.detach().argmax(1) == labels).float().mean() for x in logits])
        return all_reduce_mean(correct)

    def add_direction_gradient(self, model: MultiModalModel, balance: torch.Tensor) -> torch.Tensor:
        """``W_f.grad += λ·∂L_gd/∂W_f``; returns L_gd."""
        params = output_layer(model.head)
        if any(p.grad is None for p in params):
            raise ConfigError(
                "cggm's direction term acts on the model's fusion head, which this step did not train (the step "
                "method uses a head of its own); set cggm's lam: 0 to keep only the gradient scaling"
            )
        fused = torch.cat([p.detach() for p in params], dim=1).float().requires_grad_()
        with torch.enable_grad():
            last_layers = [cast(nn.Linear, cast(nn.Sequential, c)[-1]) for c in self.classifiers.values()]
            loss = direction_loss(balance, [layer.weight for layer in last_layers], fused)
            (grad,) = torch.autograd.grad(loss, fused)
        for p, part in zip(params, grad.split([p.shape[1] for p in params], dim=1)):
            p.grad.add_(part.to(p.grad.dtype), alpha=self.options.lam)
        return loss.detach()
