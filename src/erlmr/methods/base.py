"""The method interface: a training step hook and an optional gradient hook.

A method is one class in one file under ``methods/``, registered in :data:`METHODS`. The trainer calls,
for every batch::

    result = method.training_step(model, inputs, labels)   # forward + backward: fills .grad
    method.modify_gradients(model, result, labels)          # optional: rescale / project gradients
    optimizer.step()

and ``on_epoch_start`` / ``on_epoch_end`` around every epoch; ``predict`` at evaluation. A method's
options are a dataclass named ``Options`` on the class, filled from ``method.options`` in the config.
Options subclass :class:`erlmr.options.CheckedOptions` and declare each number's range beside its field
(``alpha: float = ranged(0.3, ge=0)``, ``mode: str = one_of("a", ("a", "b"))``), so that a value out of
range is a ConfigError before anything is trained.

Resuming: everything a method keeps across batches or epochs (prototypes, running means, projections,
scores, weights, an epoch window) goes into ``state_dict()`` and comes back in ``load_state_dict()``;
a run killed and resumed then ends exactly where an uninterrupted one does. Draw random numbers from
the global torch, numpy or Python RNG (their states are saved with the run), or keep a private
generator's state in ``state_dict()``. ``context.splits`` may be None when a trained run is
loaded for prediction (:func:`erlmr.analysis.prediction.load_run`), so read the data in training hooks, not in
``__init__``. A method whose ``predict`` needs every modality sets ``supports_missing_modalities = False``.

A method may add modules to the model in ``__init__`` (an extra head, say, with ``model.add_module``):
the optimiser is created after the method, and the modules are saved with the model. The trainer sets
``method.optimizer`` once it exists; a method that takes several optimiser steps per batch (alternating
updates) sets ``steps_optimizer = True`` and calls ``self.optimizer.step()`` itself.
Statistics that decide a coefficient (scores, prototypes, running means) go through
:func:`erlmr.training.distributed.all_reduce_mean` so that every rank of a distributed run applies the same one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection, Mapping

import torch
import torch.nn.functional as F

from ..data.base import DatasetSplits
from ..nn.model import ModelOutput, MultiModalModel
from ..registry import Registry


@dataclass
class StepResult:
    """What one training step produced. ``logs`` hold detached scalars averaged over the epoch."""

    loss: torch.Tensor
    output: ModelOutput
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class MethodContext:
    """What a method may need to know about the run besides the model."""

    modalities: list[str]
    num_classes: int
    epochs: int
    batch_size: int
    device: torch.device
    splits: DatasetSplits | None = None


@dataclass
class NoOptions:
    pass


class Method:
    """Plain cross-entropy on the fused logits. Subclasses override ``loss`` or ``training_step``."""

    Options: type = NoOptions
    #: the model gets the Euler representation when the config does not say otherwise
    uses_euler: bool = False
    #: the method only changes gradients, so it may follow another method after a '+'
    modulates_gradients: bool = False
    #: the method cannot run on its default options (``bench --methods all`` leaves it out)
    needs_options: bool = False
    #: the method calls ``self.optimizer.step()`` itself inside ``training_step``
    steps_optimizer: bool = False
    #: ``predict`` works with some modalities absent (the model zero-fills their fusion inputs)
    supports_missing_modalities: bool = True
    #: who averages gradients over the ranks of a distributed run (erlmr.training.ddp): ``"ddp"``, DDP inside the
    #: step's one backward pass through the model's forward; ``"step"``, the trainer, once after the step
    #: (and before every optimiser step the method takes itself); ``"method"``, the method itself. Unset:
    #: ``"ddp"`` for this class's own ``training_step``, ``"step"`` for any other.
    gradient_sync: str | None = None

    def __init__(self, model: MultiModalModel, options: Any, context: MethodContext):
        self.options = options
        self.context = context
        self.epoch = 0
        self.optimizer: torch.optim.Optimizer | None = None

    def training_step(self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor) -> StepResult:
        output = model(inputs)
        loss = self.loss(output, labels)
        loss.backward()
        return StepResult(loss.detach(), output)

    def gradient_sync_mode(self) -> str:
        if self.gradient_sync is not None:
            return self.gradient_sync
        return "ddp" if type(self).training_step is Method.training_step else "step"

    def loss(self, output: ModelOutput, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.logits, labels)

    def modify_gradients(self, model: MultiModalModel, result: StepResult, labels: torch.Tensor) -> None:
        """Called after the backward pass, before the optimiser step."""

    def on_epoch_start(self, model: MultiModalModel, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, model: MultiModalModel, epoch: int) -> dict[str, float]:
        return {}

    def predict(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], absent: Collection[str] = ()
    ) -> ModelOutput:
        return model(inputs, absent=absent)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch = state.get("epoch", 0)


METHODS: Registry[type[Method]] = Registry("method")
