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

from typing import TYPE_CHECKING, Mapping, Sequence

import torch
from torch import nn

from .distributed import all_reduce_mean, all_reduce_mean_lists, all_reduce_sum, is_distributed

if TYPE_CHECKING:
    from ..methods.base import Method, StepResult
    from ..nn.model import MultiModalModel


class StepContext:
    """One training step's access to gradients and the optimiser (see the module docstring).

    ``epoch`` and ``index`` (the step within the epoch, from 0) say where the step falls;
    ``steps_per_epoch`` is the number of steps in this epoch; ``samples`` the batch's indices in the
    train split (None outside the trainer). ``grad_clip`` > 0 clips the gradients of ``parameters`` to
    that global norm before every update (``optim.grad_clip``).
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
        self.optimizer = optimizer
        self.parameters = list(parameters)
        self.epoch, self.index, self.steps_per_epoch = epoch, index, steps_per_epoch
        self.grad_clip = grad_clip
        self.samples = samples
        self.optimizer_steps = 0
        self._local_gradients = False
        self._pending: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []

    reduce_mean = staticmethod(all_reduce_mean)
    reduce_sum = staticmethod(all_reduce_sum)

    def backward(self, loss: torch.Tensor, retain_graph: bool = False) -> None:
        """Accumulate ``loss``'s gradients into ``.grad`` (averaged over ranks when the step ends)."""
        loss.backward(retain_graph=retain_graph)
        self._local_gradients = True

    def gradients(
        self, losses: Sequence[torch.Tensor], params: Sequence[torch.Tensor], retain_graph: bool = False
    ) -> list[list[torch.Tensor]]:
        """Each loss's gradients with respect to ``params`` (zeros where a parameter is unused), averaged
        over ranks in one all-reduce. ``.grad`` is left alone. The graph is kept for all but the last
        loss, and for the last one too with ``retain_graph``."""
        grads = []
        for i, loss in enumerate(losses):
            keep = retain_graph or i < len(losses) - 1
            grads.append(list(torch.autograd.grad(loss, params, retain_graph=keep, materialize_grads=True)))
        all_reduce_mean_lists(grads)
        return grads

    def add_gradients(self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> None:
        """Add ``grads`` (already averaged over ranks, e.g. built from :meth:`gradients`) to ``.grad``."""
        if is_distributed() and self._local_gradients:
            self._pending.append((list(params), list(grads)))  # added after the local ones are averaged
        else:
            _accumulate(params, grads)

    def synchronize(self) -> None:
        """Average what ``backward`` left in ``.grad`` over the ranks, then add the pending gradients.
        The trainer calls it when the step ends; :meth:`optimizer_step` before it steps."""
        if is_distributed() and self._local_gradients:
            average_gradients(self.parameters)
        for params, grads in self._pending:
            _accumulate(params, grads)
        self._local_gradients, self._pending = False, []

    def optimizer_step(self) -> None:
        """Update the parameters with the gradients so far and clear them, for a method that takes
        several updates per batch (alternating unimodal steps, say). The trainer then takes none."""
        self.synchronize()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer_steps += 1

    def finish(self) -> None:
        """The step's update, unless the method already took its own (:meth:`optimizer_step`)."""
        if not self.optimizer_steps:
            self.optimizer_step()

    def reset_optimizer_state(self) -> None:
        """Forget the optimiser's per-parameter state (momentum buffers), as a fresh optimiser would."""
        self.optimizer.state.clear()


def method_step(
    method: Method, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor,
    step: StepContext, step_model: nn.Module | None = None,
) -> StepResult:
    """A method's training step short of the final update, as every loop takes it: the method's losses
    (through ``step_model``, e.g. a compiled model, when given), the gradients averaged over ranks,
    then the method's gradient hook (unless the method already updated the model itself). Follow it
    with ``step.finish()``."""
    result = method.training_step(step_model or model, inputs, labels, step)
    step.synchronize()
    if not step.optimizer_steps:
        method.modify_gradients(model, result, labels)
    return result


def _accumulate(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> None:
    for p, g in zip(params, grads):
        p.grad = g if p.grad is None else p.grad + g


def average_gradients(params: Sequence[nn.Parameter]) -> None:
    """Every parameter's gradient averaged over the ranks, in one all-reduce. A parameter with no
    gradient on some rank counts as zero there; one with no gradient on any rank keeps none."""
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    present = torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)
    all_reduce_mean_lists([grads, [present]])
    for p, grad, seen in zip(params, grads, present.tolist()):
        p.grad = grad if seen > 0 else None
