"""UMT: uni-modal teachers, trained first in the same run, distilled into the multi-modal model's encoders.

Du, Teng, Li, Liu, Yuan, Wang, Yuan, Zhao. "On Uni-Modal Feature Learning in Supervised Multi-Modal
Learning". ICML 2023 (arXiv 2305.01233); UMT first appeared in Du, Li, Liu, Wen, Hua, Wang, Zhao,
"Improving Multi-Modal Learning with Uni-Modal Teachers", arXiv 2106.11059. No official code was
released; the only implementation is BalanceBenchmark's (github.com/GeWu-Lab/BalanceBenchmark @
4c1482f, ``balancemm/trainer/UMT_trainer.py``, ``training_step``), whose defaults are used here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..nn.model import ModelOutput, MultiModalModel, pool_positions
from ..options import CheckedOptions, log_uniform, ranged
from .base import METHODS, Method, MethodContext, StepResult
from .ume import encoder_widths, refuse_joint_clipping

if TYPE_CHECKING:
    from ..training.step import StepContext


@dataclass
class UMTOptions(CheckedOptions):
    #: λ, weight of the feature distillation (BalanceBenchmark's ``scaling``)
    distill_weight: float = ranged(10.0, ge=0, search=log_uniform(1.0, 100.0))
    #: epochs that train the teachers before the student; unset: half the run, rounded down
    teacher_epochs: int | None = ranged(None, ge=1)


class Teacher(nn.Module):
    """A uni-modal classifier: a copy of the model's encoder for one modality and its own linear head."""

    def __init__(self, encoder: nn.Module, width: int, num_classes: int):
        super().__init__()
        self.encoder = copy.deepcopy(encoder)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's output map and the head's logits on its average over positions."""
        encoded = self.encoder(x)
        return encoded, self.head(pool_positions(encoded))


@METHODS.register(
    "umt",
    "UMT: uni-modal teachers trained first in the run, their features distilled into the encoders "
    "(Du et al., ICML 2023)",
)
class UMT(Method):
    """Two phases in one run.

    **Teachers** (the first ``teacher_epochs`` epochs; by default half the run, rounded down, or one
    epoch for a method built outside a run, whose length it is not told):
    ``teachers[m]`` is a copy of modality m's encoder, taken when the
    method is built, with its own ``Linear(D_m, C)`` head, trained on ``Σ_m CE(teacher_m(x_m), y)``.
    The losses touch disjoint parameters, so one optimiser step is M independent uni-modal trainings;
    global-norm clipping (``optim.grad_clip``) would couple them and is refused in this phase. The
    model is not trained.

    **Student** (the rest of the run): the teachers are frozen (eval mode, no gradient) and the model
    trains on ``CE(f, y) + λ·Σ_m mean((z_m − t_m)²)``, with ``z_m`` and ``t_m`` the model's and the
    teacher's encoder outputs averaged over positions (the mean over the batch and the D_m features,
    ``nn.MSELoss``). ``predict`` is the model alone.

    Defaults (BalanceBenchmark): λ = 10, distillation in every epoch of the student phase (its window
    0–80 covers its 30-epoch runs). The teachers' phase shares the run's optimiser and learning-rate
    schedule; the phase is a function of the epoch, so a resumed run is in the same phase, and every
    epoch trains one set of parameters. A run of one epoch is too short for two phases: it has no
    teachers and trains the model alone on ``CE(f, y)``. The epoch logs' train accuracy is the
    teachers' mean prediction during their phase.

    Differences from BalanceBenchmark: its teachers are separate earlier runs found by rewriting its
    output path and loading their checkpoint selected on the *test* split; here they are trained in
    the run itself, on the train split. Its teachers stay in train mode (batch-norm statistics keep
    moving on the student's batches); here they are in eval mode. The paper's choice between UMT and
    UME for a dataset is advice, not implemented (see :class:`~erlmr.methods.ume.UME`).

    Extra cost per step: teacher phase about one joint step (M encoders, M small heads); student phase
    M extra encoder forwards without backward.
    """

    Options = UMTOptions

    def __init__(self, model: MultiModalModel, options: UMTOptions, context: MethodContext):
        super().__init__(model, options, context)
        widths = encoder_widths(model)
        self.teachers = nn.ModuleDict(
            {m: Teacher(model.encoders[m], width, context.num_classes) for m, width in zip(model.modalities, widths)}
        )
        if context.epochs is not None:
            self.teacher_span()  # a teacher phase that leaves no student phase fails before training

    def teacher_span(self) -> int:
        """The length of the teachers' phase in epochs; 0 for a run of one epoch, too short for two."""
        chosen, epochs = self.options.teacher_epochs, self.context.epochs
        if chosen is None:  # outside a training run the length is unknown (MethodContext.epochs None): one epoch
            return 1 if epochs is None else epochs // 2
        if epochs is not None and chosen >= epochs:
            raise ConfigError(
                f"umt: teacher_epochs={chosen} leaves no epoch of the {epochs}-epoch run to the student; "
                f"choose fewer than {epochs}, or leave it unset for half the run"
            )
        return chosen

    def training_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        span = self.teacher_span()
        teaching = step.epoch < span
        self.teachers.train(teaching and self.training)
        if teaching:
            result = self.teacher_step(model, inputs, labels, step)
        else:
            result = self.student_step(model, inputs, labels, with_teachers=span > 0)
        step.backward(result.loss)
        result.loss = result.loss.detach()
        result.logs["umt_teaching"] = torch.tensor(float(teaching))
        return result

    def teacher_outputs(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor]
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Each teacher's encoder map and logits, on the inputs normalised as the model normalises them."""
        if model.normalizer is not None:
            inputs = model.normalizer(dict(inputs))
        return {m: self.teachers[m](inputs[m]) for m in model.modalities}

    def teacher_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        refuse_joint_clipping("umt", step)
        outputs = self.teacher_outputs(model, inputs)
        logits = {m: x for m, (_, x) in outputs.items()}
        losses = {m: F.cross_entropy(x, labels) for m, x in logits.items()}
        output = ModelOutput(
            logits=torch.stack(list(logits.values())).mean(0).detach(),
            modality_logits={m: x.detach() for m, x in logits.items()},
            features={m: pool_positions(e).detach() for m, (e, _) in outputs.items()},
            encoded={m: e.detach() for m, (e, _) in outputs.items()},
        )
        logs = {f"umt_teacher_loss_{m}": x.detach() for m, x in losses.items()}
        return StepResult(torch.stack(list(losses.values())).sum(), output, logs)

    def student_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, with_teachers: bool
    ) -> StepResult:
        output = model(inputs)
        loss = F.cross_entropy(output.logits, labels)
        if not with_teachers:  # no teacher phase (a one-epoch run): untrained copies would teach nothing
            return StepResult(loss, output)
        with torch.no_grad():
            targets = {m: pool_positions(encoded) for m, (encoded, _) in self.teacher_outputs(model, inputs).items()}
        distance = torch.stack(
            [F.mse_loss(pool_positions(output.encoded[m]), targets[m]) for m in model.modalities]
        ).sum()
        return StepResult(loss + self.options.distill_weight * distance, output, {"umt_distill": distance.detach()})
