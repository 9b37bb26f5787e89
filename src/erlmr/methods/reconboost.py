"""ReconBoost: alternating boosting over modalities with a reconcilement term, then global rectification.

Hua, Xu, Bao, Yang, Huang. "ReconBoost: Boosting Can Achieve Modality Reconcilement". ICML 2024.
Official code: github.com/huacong/ReconBoost (``train.py``; defaults below follow it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Collection, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.model import ModelOutput, MultiModalModel
from ..options import CheckedOptions, ranged
from .base import METHODS, Method, MethodContext, StepResult

if TYPE_CHECKING:
    from ..training.step import StepContext

LEARN, RECTIFY = "learn", "rectify"


@dataclass
class ReconBoostOptions(CheckedOptions):
    #: epochs one modality's learner trains alone in a stage (``epochs_per_stage``)
    stage_epochs: int = ranged(4, ge=1)
    #: epochs of global rectification that close every stage (``correct_epoch``); 0 turns it off
    rectify_epochs: int = ranged(4, ge=0)
    #: w₁, weight of the learner's own cross-entropy
    fit_weight: float = ranged(5.0, ge=0)
    #: w₂, weight of the KL-derived reconcilement term (down-weights samples the other learners fit)
    reconcile_weight: float = ranged(1.0, ge=0)
    #: α, weight of the memory-consolidation term tying the learner to the previous stage's learner
    consolidation_weight: float = ranged(0.5, ge=0)
    #: initial value of the learnable scale β of the ensemble ``F = β·Σ_m f_m``
    boost_rate: float = 1.0


@dataclass
class Schedule:
    """Where an epoch falls: stage s trains modality ``s mod M`` alone, then (optionally) rectifies all."""

    stage: int
    phase: str
    learner: str
    previous: str | None


def schedule_for(epoch: int, modalities: Sequence[str], stage_epochs: int, rectify_epochs: int) -> Schedule:
    stage, within = divmod(epoch, stage_epochs + rectify_epochs)
    phase = LEARN if within < stage_epochs else RECTIFY
    previous = modalities[(stage - 1) % len(modalities)] if stage > 0 else None
    return Schedule(stage, phase, modalities[stage % len(modalities)], previous)


def boosting_terms(
    learner_logits: torch.Tensor,
    rest_logits: torch.Tensor | None,
    labels: torch.Tensor,
    fit_weight: float,
    reconcile_weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The learner's fit term ``−(w₁/C)·log p_y`` and reconcilement term ``(w₂/C)·q_y·log p_y``, batch means.

    ``p = softmax(f_m)`` is the learner's prediction, ``q = softmax(F_{−m})`` that of the ensemble of the
    other learners added so far (a constant here). Together they are ``−((w₁ − w₂ q_y)/C)·log p_y``:
    samples the other modalities already classify well weigh less, so the learner fits what they miss
    (the gradient-boosting form the KL reconcilement gives in the paper). The 1/C is the official code's
    mean over classes. With no other learner yet (``rest_logits`` None) ``q = 1``, as the official code's
    one-column placeholder ensemble gives.
    """
    num_classes = learner_logits.shape[1]
    log_p = learner_logits.log_softmax(dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
    fit = -(fit_weight / num_classes) * log_p.mean()
    if rest_logits is None:
        return fit, (reconcile_weight / num_classes) * log_p.mean()
    q = rest_logits.detach().softmax(dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
    return fit, (reconcile_weight / num_classes) * (q * log_p).mean()


def consolidation_term(learner_logits: torch.Tensor, previous_logits: torch.Tensor, weight: float) -> torch.Tensor:
    """``α·MSE(softmax(f_m), softmax(f_prev))`` with the gradient flowing into the current learner only."""
    return weight * F.mse_loss(learner_logits.softmax(dim=1), previous_logits.detach().softmax(dim=1))


@METHODS.register(
    "reconboost",
    "ReconBoost: alternating per-modality boosting with reconcilement + global rectification (Hua et al., ICML 2024)",
)
class ReconBoost(Method):
    """Modality learners ``f_m`` are the model's per-modality logits; the ensemble is ``F = β·Σ_m f_m``.

    Trainer-facing schedule, in epochs: a stage lasts ``stage_epochs + rectify_epochs`` epochs. Stage s
    (s = 0, 1, ...) picks modality ``modalities[s mod M]``; for its first ``stage_epochs`` epochs only that
    learner is trained, on ``fit + reconcilement + consolidation`` (:func:`boosting_terms` against the
    ensemble of the other learners added so far, :func:`consolidation_term` against the learner of stage
    s−1; none in stage 0); then the learner joins the ensemble, and for the stage's last
    ``rectify_epochs`` epochs the learners in the ensemble (their encoders, the head, β) are trained on
    ``CE(F, y)`` with F over the ensemble. Learners join in modality order, so after stage s the ensemble
    holds ``modalities[:min(s + 1, M)]``, and ``predict`` returns F over them (the learner of the running
    stage included). This is the official code without ``--use_pretrain``: erlmr does not pre-train
    learners; the README's commands pre-train both and so rectify all learners from stage 0. The
    optimiser's state (momentum) is cleared whenever the phase or the learner changes, as the official
    code creates a fresh optimiser for every phase.

    Differences from the official code: the consolidation term carries gradient into the current learner
    (the official one detaches both sides, so it changes only the logged loss); the learners share the
    model's fusion head, whose per-modality logits they are, instead of a separate MLP head; one
    optimiser (``optim.*``, set ``optim.weight_decay=5e-4`` to match) serves both phases. Extra cost:
    none in the forward pass (one pass gives every learner's logits).
    """

    Options = ReconBoostOptions
    # Buffers (add_state), typed: nn.Module types an attribute it does not know as a tensor or a module.
    learners: torch.Tensor

    def __init__(self, model: MultiModalModel, options: ReconBoostOptions, context: MethodContext):
        super().__init__(model, options, context)
        self.rate = nn.Parameter(torch.tensor(float(options.boost_rate)))
        self.schedule = self.schedule_at(0)
        #: how many learners (modalities, in order) the ensemble holds; what a loaded run predicts with
        self.add_state("learners", torch.ones((), dtype=torch.long))

    def schedule_at(self, epoch: int) -> Schedule:
        return schedule_for(epoch, self.context.modalities, self.options.stage_epochs, self.options.rectify_epochs)

    def on_epoch_start(self, model: MultiModalModel, epoch: int) -> None:
        super().on_epoch_start(model, epoch)
        self.schedule = self.schedule_at(epoch)
        self.learners.fill_(min(self.schedule.stage + 1, len(self.context.modalities)))

    def in_ensemble(self, logits: Mapping[str, torch.Tensor], before_current: bool = False) -> dict[str, torch.Tensor]:
        """The logits of the learners in the ensemble: so far, or (``before_current``) before this stage's."""
        count = min(self.schedule.stage, len(self.context.modalities)) if before_current else int(self.learners)
        return {m: logits[m] for m in self.context.modalities[:count] if m in logits}

    def starts_new_phase(self, epoch: int) -> bool:
        """True when ``epoch`` trains another phase or learner than the epoch before it."""
        if epoch == 0:
            return False
        before = self.schedule_at(epoch - 1)
        return (before.phase, before.learner) != (self.schedule.phase, self.schedule.learner)

    def on_epoch_end(self, model: MultiModalModel, epoch: int) -> dict[str, float]:
        return {
            "reconboost_stage": float(self.schedule.stage),
            "reconboost_learner": float(self.context.modalities.index(self.schedule.learner)),
            "reconboost_rectifying": float(self.schedule.phase == RECTIFY),
            "reconboost_rate": float(self.rate.detach()),
        }

    def training_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        if step.index == 0 and self.starts_new_phase(step.epoch):
            step.reset_optimizer_state()  # the official code starts a fresh optimiser for every phase
        output = model(inputs)
        ensemble = self.ensemble(self.in_ensemble(output.modality_logits))
        if self.schedule.phase == RECTIFY:
            loss = F.cross_entropy(ensemble, labels)
            logs = {"reconboost_rectify_loss": loss.detach()}
        else:
            loss, logs = self.learner_loss(output.modality_logits, labels)
        step.backward(loss)
        return StepResult(loss.detach(), dataclasses.replace(output, logits=ensemble.detach()), logs)

    def learner_loss(
        self, logits: Mapping[str, torch.Tensor], labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        learner, previous = self.schedule.learner, self.schedule.previous
        rest = {m: f for m, f in self.in_ensemble(logits, before_current=True).items() if m != learner}
        rest_logits = self.ensemble(rest).detach() if rest else None
        fit, reconcile = boosting_terms(
            logits[learner], rest_logits, labels, self.options.fit_weight, self.options.reconcile_weight
        )
        consolidation = torch.zeros_like(fit)
        if previous is not None:
            consolidation = consolidation_term(logits[learner], logits[previous], self.options.consolidation_weight)
        logs = {
            "reconboost_fit": fit.detach(),
            "reconboost_reconcile": reconcile.detach(),
            "reconboost_consolidation": consolidation.detach(),
        }
        return fit + reconcile + consolidation, logs

    def ensemble(self, logits: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.rate * torch.stack(list(logits.values())).sum(dim=0)

    def predict(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], absent: Collection[str] = ()
    ) -> ModelOutput:
        output = model(inputs, absent=absent)
        present = {m: f for m, f in self.in_ensemble(output.modality_logits).items() if m in output.encoded}
        if not present:  # every learner absent: the head's constant prediction
            return output
        return dataclasses.replace(output, logits=self.ensemble(present))
