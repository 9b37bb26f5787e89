"""The step context: the narrow door through which a method's training step reaches gradients,
the optimiser and the other ranks of a distributed run.

A method's :meth:`~erlmr.methods.base.Method.training_step` computes its losses and hands them to
the context instead of calling ``loss.backward()`` or ``optimizer.step()`` itself::

    step.backward(loss)                                   # into .grad; averaged over ranks afterwards
    g_fused, g_mmc = step.gradients([fused, mmc], params) # autograd.grad of each, already averaged
    step.add_gradients(params, combined)                  # .grad += gradients built from averaged ones
    step.optimizer_step()                                 # for methods that update several times a batch

so that the same method runs in one process, under ``torchrun`` and inside other loops (a Lightning
module, a user's own loop) that implement the same few calls. In a distributed run the trainer never
lets DDP reduce inside a backward pass: gradients that ``backward`` leaves in ``.grad`` are averaged
over the ranks in one flat all-reduce when the step ends (or before a method's own optimiser step),
and gradients from :meth:`StepContext.gradients` are averaged as they are taken, so that a method that
combines several gradients non-linearly (min-norm weights, per-tensor rescaling) combines the
*global* ones and every rank applies the same update.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence, cast

import torch
from torch import nn

from ..nn.balance import Gradients

if TYPE_CHECKING:
    from ..methods.base import Method, StepResult
    from ..nn.model import MultiModalModel


class StepContext(Gradients):
    """One training step's access to gradients and the optimiser (see the module docstring).

    The gradient calls (``backward``, ``gradients``, ``add_gradients``, ``synchronize``) are those of
    :class:`erlmr.nn.balance.Gradients`. ``epoch`` and ``index`` (the step within the epoch, from 0) say
    where the step falls; ``steps_per_epoch`` is the number of steps in this epoch; ``samples`` the
    batch's indices in the train split (None outside the trainer). ``grad_clip`` > 0 clips the gradients
    of ``parameters`` to that global norm before every update (``optim.grad_clip``).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        parameters: Sequence[nn.Parameter],
        epoch: int,
        index: int,
        steps_per_epoch: int,
        grad_clip: float = 0.0,
        samples: torch.Tensor | None = None,
    ):
        super().__init__(parameters)
        self.optimizer = optimizer
        self.epoch, self.index, self.steps_per_epoch = epoch, index, steps_per_epoch
        self.grad_clip = grad_clip
        self.samples = samples
        self.optimizer_steps = 0

    def optimizer_step(self, clear_gradients: bool = True) -> None:
        """Update the parameters with the gradients so far and clear them, for a method that takes
        several updates per batch (alternating unimodal steps, say). The trainer then takes none."""
        self.synchronize()
        self.update()
        if clear_gradients:
            self.optimizer.zero_grad(set_to_none=True)
        self.optimizer_steps += 1

    def update(self) -> None:
        """Clip the gradients (``grad_clip``) and apply the optimiser: what a loop that owns the
        optimiser (erlmr.lightning, through the LightningOptimizer) does its own way."""
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.grad_clip)
        self.optimizer.step()

    def finish(self, clear_gradients: bool = True) -> None:
        """The step's update, unless the method already took its own (:meth:`optimizer_step`); with
        ``clear_gradients`` false the gradients stay in ``.grad`` (a captured step's, for the checks after it)."""
        if not self.optimizer_steps:
            self.optimizer_step(clear_gradients)

    def reset_optimizer_state(self) -> None:
        """Forget the optimiser's per-parameter state (momentum buffers), as a fresh optimiser would."""
        self.optimizer.state.clear()


def method_step(
    method: Method,
    model: MultiModalModel,
    inputs: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    step: StepContext,
    step_model: nn.Module | None = None,
) -> StepResult:
    """A method's training step short of the final update, as every loop takes it: the method's losses
    (through ``step_model``, e.g. a compiled model, when given), the gradients averaged over ranks,
    then the method's gradient hook (unless the method already updated the model itself). Follow it
    with ``step.finish()``."""
    # A step model (CompiledModel) stands in for the model: it forwards every other attribute to it.
    through = model if step_model is None else cast("MultiModalModel", step_model)
    result = method.training_step(through, inputs, labels, step)
    step.synchronize()
    if not step.optimizer_steps:
        method.modify_gradients(model, result, labels)
    return result
