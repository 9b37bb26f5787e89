"""The method contract: a method is an ``nn.Module`` with a training-step hook and a gradient hook.

A method is one class in one file under ``methods/``, registered in :data:`METHODS`. The trainer calls,
for every batch::

    result = method.training_step(model, inputs, labels, step)  # losses → step.backward / step.gradients
    method.modify_gradients(model, result, labels)             # optional: rescale / project gradients
    optimizer.step()                                            # unless the step took its own (MLA)

``on_epoch_start`` / ``on_epoch_end`` around every epoch, and ``predict`` at evaluation. ``step`` is a
:class:`~erlmr.training.step.StepContext`: it takes the method's losses (``step.backward(loss)``,
``step.gradients([...], params)``), its own optimiser updates (``step.optimizer_step()``) and says where
the step falls (``step.epoch``, ``step.index``, ``step.steps_per_epoch``); the trainer keeps the
optimiser and the distributed reduction to itself, so the same method runs in any loop that provides
those calls.

**Parts and state.** A method owns the modules and parameters it adds (an extra head, a learnable
rate) as submodules: the optimiser covers the model's and the method's parameters, and a checkpoint is
``model.state_dict()`` plus ``method.state_dict()``. Everything it keeps across batches or epochs
(prototypes, running means, projections) is a tensor declared with :meth:`Method.add_state`, with how
it is reduced across the ranks of a distributed run; :meth:`Method.reduce_states` applies those
reductions. Counters are tensors too. A killed and resumed run then ends exactly where an
uninterrupted one does without any per-method code. Draw random numbers from the global torch, numpy or
Python RNG (their states are saved with the run), or keep a private generator's state in
``get_extra_state``/``set_extra_state``.

**Options** are a dataclass named ``Options`` on the class, filled from ``method.options`` in the
config; fields declare their range beside their default (:func:`erlmr.options.ranged`,
:func:`erlmr.options.one_of`), so a bad value is a ConfigError before anything is trained.
``context.splits`` is None when a trained run is loaded for prediction, so read the data in training
hooks, not in ``__init__``. A method whose ``predict`` needs every modality sets
``supports_missing_modalities = False``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Collection, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..data.base import DatasetSplits
from ..errors import ConfigError
from ..nn.model import ModelOutput, MultiModalModel
from ..parallel import all_reduce_mean, all_reduce_sum
from ..registry import Registry

if TYPE_CHECKING:
    from ..training.step import StepContext

REDUCTIONS = {"sum": all_reduce_sum, "mean": all_reduce_mean}


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
    batch_size: int
    device: torch.device
    splits: DatasetSplits | None = None
    #: the run's length in epochs, for a method whose phases are sized by it (None outside a training run)
    epochs: int | None = None


@dataclass
class NoOptions:
    pass


class Method(nn.Module):
    """Plain cross-entropy on the fused logits. Subclasses override ``loss`` or ``training_step``."""

    Options: type = NoOptions
    #: the model gets the Euler representation when the config does not say otherwise
    uses_euler: bool = False
    #: the method only changes gradients, so it may follow another method after a '+'
    modulates_gradients: bool = False
    #: the method cannot run on its default options (``bench --methods all`` leaves it out)
    needs_options: bool = False
    #: ``predict`` works with some modalities absent (the model zero-fills their fusion inputs)
    supports_missing_modalities: bool = True

    def __init__(self, model: MultiModalModel | None, options: Any, context: MethodContext):
        super().__init__()
        self.options = options
        self.context = context
        self.epoch = 0
        self._state_reductions: dict[str, str | None] = {}

    @property
    def trained_modalities(self) -> list[str]:
        """The modalities the method trains to be used (what the imbalance alarm watches)."""
        return list(self.context.modalities)

    def add_state(self, name: str, default: torch.Tensor, reduce: str | None = None) -> None:
        """Declare ``name`` as state kept across steps: a buffer saved in checkpoints, moved with the
        method, and reduced over ranks by :meth:`reduce_states` with ``reduce`` ("sum", "mean" or None)."""
        if reduce is not None and reduce not in REDUCTIONS:
            raise ValueError(f"state {name!r}: reduce must be one of {sorted(REDUCTIONS)} or None, got {reduce!r}")
        self.register_buffer(name, default.detach().clone().to(self.context.device))
        self._state_reductions[name] = reduce

    @torch.no_grad()
    def reduce_states(self) -> None:
        """Replace every declared state that has a reduction by its reduction over all ranks."""
        for name, reduce in self._state_reductions.items():
            if reduce is not None:
                state = getattr(self, name)
                state.copy_(REDUCTIONS[reduce](state))

    def training_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        output = model(inputs)
        loss = self.loss(output, labels)
        step.backward(loss)
        return StepResult(loss.detach(), output)

    def loss(self, output: ModelOutput, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.logits, labels)

    def modify_gradients(self, model: MultiModalModel, result: StepResult, labels: torch.Tensor) -> None:
        """Called after the step's gradients are complete (and averaged over ranks), before the update."""

    def on_epoch_start(self, model: MultiModalModel, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, model: MultiModalModel, epoch: int) -> dict[str, float]:
        return {}

    def epoch_samples(self, epoch: int) -> torch.Tensor | None:
        """The train-split indices epoch ``epoch`` trains on (repeats allowed), for a method that
        re-samples its data; None for all of them. Called after :meth:`on_epoch_start`; the trainer
        shuffles them with the run's seed, and each step sees its batch's indices as ``step.samples``.
        Keep the list in the method's state (``get_extra_state``) so a resumed epoch gets the same one."""
        return None

    def predict(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], absent: Collection[str] = ()
    ) -> ModelOutput:
        return model(inputs, absent=absent)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{type(self).__name__} is a training method; call training_step or predict, not the module")


def equal_feature_width(model: MultiModalModel, reason: str) -> int:
    """The one fusion-head input width every modality shares; a ConfigError starting with ``reason`` (why
    the method needs them equal) when they differ."""
    widths = dict(zip(model.modalities, model.head.in_features))
    if len(set(widths.values())) != 1:
        raise ConfigError(
            f"{reason}; got {widths}. Give every encoder the same output width in model.encoder_options, "
            "or use model.euler: true"
        )
    return next(iter(widths.values()))


def require_splits(method: str, context: MethodContext) -> DatasetSplits:
    """The run's splits for a method that reads the data in its training hooks."""
    if context.splits is None:
        raise ConfigError(f"method {method!r} reads the training data in its hooks; build it with MethodContext.splits")
    return context.splits


METHODS: Registry[type[Method]] = Registry("method")
