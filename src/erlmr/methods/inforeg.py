"""InfoReg: slow the information-rich modality down during its prime learning window.

Huang, Wei, Yang, Hu. "Adaptive Unimodal Regulation for Balanced Multimodal Information Acquisition".
CVPR 2025 (arXiv 2503.18595). Official code: github.com/GeWu-Lab/InfoReg_CVPR2025 @
939b2ed11dcbf4daddb2507157b2cb9f8d0e24d7 (``main.py``: ``train_epoch`` and the trace lists of ``main``;
defaults from its argparse and hard-coded constants). The released ``main.py`` cannot run as it is: it
imports a missing ``utils/utils.py`` and a dataset module shipped only as ``.pyc``, and its Fisher loop
multiplies the ``None`` gradients of unused heads at the first step; this implementation follows what
the code evidently computes.
"""

from __future__ import annotations

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
class InfoRegOptions(CheckedOptions):
    #: c in β_m = c·exp(tanh(gap)) (0.95 when audio leads in the official code; 0.1 when visual leads)
    strength: float = ranged(0.95, ge=0, search=uniform(0.1, 1.0))
    #: the window is open while the trace's relative growth k exceeds this (0.05; 0.04 in the March 2025 code)
    window_threshold: float = ranged(0.05)
    #: W: epochs over which the trace's growth is measured (10, zero-padded history)
    window_epochs: int = ranged(10, ge=1)


def window_growth(history: torch.Tensor) -> torch.Tensor:
    """k = ``(F(e−1) − F(e−W−1)) / Σ_{j=e−W}^{e−1} F(j)`` per modality from ``history`` (M, W+1), the
    last W+1 epoch traces, oldest first, zeros before training began; −inf where the sum is 0 (closed).
    This is the official ``(mean of the last W − mean of the W before the last) / mean of the last W``."""
    recent = history[:, 1:].sum(dim=1)
    growth = (history[:, -1] - history[:, 0]) / recent.clamp_min(torch.finfo(recent.dtype).tiny)
    return torch.where(recent > 0, growth, torch.full_like(growth, -torch.inf))


@METHODS.register(
    "inforeg",
    "InfoReg: proximal pull on the leading modality's encoder while its Fisher trace still grows "
    "(Huang et al., CVPR 2025)",
)
class InfoReg(Method):
    """Loss ``CE(fused) + Σ_m CE(logits_m)``; the leading modality's encoder is pulled back towards its
    weights at the start of the epoch while that modality is in its prime learning window.

    **Information.** After the backward pass (gradients averaged over ranks), modality m's trace grows
    by ``Σ_tensors mean(g²)`` over the ≥ 2-D tensors of ``model.encoders[m]`` (the official code: every
    Conv2d/Linear weight of the branch); ``F_m(e)`` is its sum over epoch e's steps, a per-layer
    normalised empirical-Fisher trace of the batch gradient.

    **Window.** At epoch 0 it is open; at epoch e it is open for modality m while
    ``k_m(e) > window_threshold`` (:func:`window_growth`, history zero-padded as in the official code,
    so the first ~W epochs are usually open). It is re-evaluated every epoch and may reopen.

    **Regulation.** ``s_m = Σ_i softmax(logits_m)_i[y_i]`` (a batch *sum*, as official), gap
    ``s_m − mean_{j≠m} s_j``; every modality with a positive gap and an open window gets
    ``β_m = strength·exp(tanh(gap))`` and ``g_θ += β_m·(θ − θ̄)`` for every parameter θ of its encoder,
    ``θ̄`` the encoder's weights when the epoch began: the gradient of ``(β_m/2)‖θ_m − θ̄_m‖²``, which
    slows the modality that is ahead while it is still acquiring information fastest.

    Deviations (docs/methods.md): the trace is measured from the loss gradient *before* the proximal
    term is added (official: after, so the regulated modality's regulation inflates its own trace);
    each modality's window comes from its own trace (official: the audio trace decides for both);
    one ``strength`` for every modality (official: 0.95 if audio leads, 0.1 if visual leads, tuned to
    CREMA-D); one backward pass (official: six, three of them diagnostic and discarded); M > 2: every
    modality ahead of the mean of the others may be regulated.
    """

    Options = InfoRegOptions
    # Buffers (add_state), typed: nn.Module types an attribute it does not know as a tensor or a module.
    epoch_trace: torch.Tensor
    trace_history: torch.Tensor

    def __init__(self, model: MultiModalModel, options: InfoRegOptions, context: MethodContext):
        super().__init__(model, options, context)
        self.modalities = list(model.modalities)
        count = len(self.modalities)
        for i, m in enumerate(self.modalities):
            self.add_state(f"anchor_{i}", self.flat_encoder(model, m))
        self.add_state("epoch_trace", torch.zeros(count, dtype=torch.float64))
        self.add_state("trace_history", torch.zeros(count, options.window_epochs + 1, dtype=torch.float64))
        self.strengths = torch.zeros(count)

    @staticmethod
    def encoder_parameters(model: MultiModalModel, modality: str) -> list[torch.nn.Parameter]:
        return [p for p in model.encoders[modality].parameters() if p.requires_grad]

    def flat_encoder(self, model: MultiModalModel, modality: str) -> torch.Tensor:
        params = self.encoder_parameters(model, modality)
        return torch.cat([p.detach().flatten() for p in params]) if params else torch.zeros(0)

    @property
    def anchors(self) -> list[torch.Tensor]:
        return [getattr(self, f"anchor_{i}") for i in range(len(self.modalities))]

    def training_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        output = model(inputs)
        unimodal = [F.cross_entropy(output.modality_logits[m], labels) for m in self.modalities]
        loss = F.cross_entropy(output.logits, labels) + torch.stack(unimodal).sum()
        step.backward(loss)
        logs = {f"inforeg_loss_{m}": x.detach() for m, x in zip(self.modalities, unimodal)}
        return StepResult(loss.detach(), output, logs)

    def window_open(self) -> torch.Tensor:
        """Which modalities are in their prime learning window this epoch, (M,) bool."""
        if self.epoch == 0:
            return torch.ones(len(self.modalities), dtype=torch.bool)
        return (window_growth(self.trace_history) > self.options.window_threshold).cpu()

    def modify_gradients(self, model: MultiModalModel, result: StepResult, labels: torch.Tensor) -> None:
        self.accumulate_trace(model)
        scores = true_class_scores([result.output.modality_logits[m] for m in self.modalities], labels).cpu()
        gaps = scores - mean_of_others(scores)
        window = self.window_open()
        regulated = (gaps > 0) & window
        strengths = torch.where(regulated, self.options.strength * torch.exp(torch.tanh(gaps)), torch.zeros_like(gaps))
        for i, m in enumerate(self.modalities):
            if strengths[i] > 0:
                self.add_proximal_gradient(model, m, self.anchors[i], float(strengths[i]))
        self.strengths = strengths
        result.logs.update({f"inforeg_strength_{m}": b for m, b in zip(self.modalities, strengths)})
        result.logs.update({f"inforeg_window_{m}": w.float() for m, w in zip(self.modalities, window)})

    @torch.no_grad()
    def accumulate_trace(self, model: MultiModalModel) -> None:
        """Add this step's ``Σ_tensors mean(g²)`` per encoder to the epoch's running traces."""
        for i, m in enumerate(self.modalities):
            grads = [p.grad for p in self.encoder_parameters(model, m) if p.grad is not None and p.dim() >= 2]
            if grads:
                self.epoch_trace[i] += (
                    torch.stack([g.double().pow(2).mean() for g in grads]).sum().to(self.epoch_trace.device)
                )

    @torch.no_grad()
    def add_proximal_gradient(
        self, model: MultiModalModel, modality: str, anchor: torch.Tensor, strength: float
    ) -> None:
        """``g += β·(θ − θ̄)`` for every parameter of the encoder that has a gradient."""
        params = self.encoder_parameters(model, modality)
        for p, start in zip(params, anchor.split([p.numel() for p in params])):
            if p.grad is not None:
                p.grad.add_(p.detach() - start.view_as(p).to(p.dtype), alpha=strength)

    def on_epoch_start(self, model: MultiModalModel, epoch: int) -> None:
        """Remember every encoder's weights: the proximal term pulls towards them all epoch."""
        super().on_epoch_start(model, epoch)
        for i, m in enumerate(self.modalities):
            self.anchors[i].copy_(self.flat_encoder(model, m))

    def on_epoch_end(self, model: MultiModalModel, epoch: int) -> dict[str, float]:
        """Append the epoch's traces to the history and start the next epoch's from zero."""
        self.trace_history.copy_(torch.cat([self.trace_history[:, 1:], self.epoch_trace[:, None]], dim=1))
        logs = {f"inforeg_trace_{m}": float(t) for m, t in zip(self.modalities, self.epoch_trace)}
        self.epoch_trace.zero_()
        return logs
