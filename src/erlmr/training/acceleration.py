"""Mixed precision, memory format, compilation and CUDA-graph capture of the training step:
``train.amp``, ``train.channels_last``, ``train.compile`` and ``train.cuda_graphs``.

``train.amp`` runs each training step (forward, losses, backward) under bf16 autocast; bf16 keeps
float32's exponent range, so no loss scaling is needed. Unset, it is on for CUDA devices that support
bf16 and off on CPU. Evaluation always runs in float32.

``train.channels_last`` stores the convolution weights channels-last (NHWC), the layout tensor cores
read without transposing; convolutions then produce channels-last maps from any input.

``train.compile`` compiles the step with ``torch.compile``: the model in two regions split at the
fusion-head inputs (encoders and Euler map; phases and head), and the losses of a method that offers
them (``compile_losses``, ERL-MR's fusion cross-entropy and MMC loss). Compiling the model as one
graph would make the fusion-head inputs outputs of the same autograd node as the logits, so gradients
with respect to them (ERL-MR's ``features`` Pareto mode) would come out as zeros; split there, they are
exact. Off by default: compiling takes minutes on a CPU.

``train.cuda_graphs`` captures the whole training step (zero grads, forward, every backward pass, the
Pareto solve, the optimiser update) as one CUDA graph and replays it for every batch of the captured
shape: one launch per step instead of hundreds (:class:`CudaGraphStep`).
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial
from typing import TYPE_CHECKING, Callable, Collection, ContextManager, Mapping, Sequence, TypeVar

import torch
from torch import nn

from ..errors import ConfigError
from .step import StepContext, method_step

if TYPE_CHECKING:
    from ..methods.base import Method, StepResult
    from ..nn.model import MultiModalModel

M = TypeVar("M", bound=nn.Module)


def resolve_amp(option: bool | None, device: torch.device) -> bool:
    bf16_cuda = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if option is None:
        return bf16_cuda
    if option and device.type == "cuda" and not bf16_cuda:
        raise ConfigError(
            f"train.amp needs bf16, which {torch.cuda.get_device_name(device)} lacks; set train.amp: false"
        )
    return option


def autocast(device: torch.device, enabled: bool, graphs: bool = False) -> ContextManager:
    """bf16 autocast when ``enabled``; under CUDA-graph capture without its weight cache, which a
    captured graph cannot hold (the values are the same)."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=not graphs)


def memory_format(model: M, channels_last: bool) -> M:
    """``model`` with its 4-D (convolution) weights stored channels-last when asked, in place."""
    if channels_last:
        # Module.to converts in place and returns the module; torch's stubs omit its memory_format keyword.
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


class CompiledModel(nn.Module):
    """The model of a compiled training step: :meth:`MultiModalModel.fusion_inputs` and
    :meth:`MultiModalModel.fuse` compiled apart, so that the fusion-head inputs stay tensors of the
    autograd graph between them. Everything else (attributes, methods) is the wrapped model's."""

    def __init__(self, model: nn.Module, compile_fn: Callable):
        super().__init__()
        self.model = model
        self._fusion_inputs = compile_fn(model.fusion_inputs)
        self._fuse = compile_fn(model.fuse)

    def forward(self, inputs: Mapping[str, torch.Tensor], absent: Collection[str] = (), head: nn.Module | None = None):
        if absent or head is not None:  # subsets of modalities or another head: rare calls, left eager
            return self.model(inputs, absent, head)
        encoded, features = self._fusion_inputs(inputs)
        return self._fuse(encoded, features)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)


def compile_step(model: MultiModalModel, method: Method, enabled: bool, backend: str = "inductor") -> nn.Module:
    """The model the training step runs through: ``model`` itself, or compiled (see the module
    docstring) together with the method's losses when the method offers ``compile_losses``."""
    if not enabled:
        return model
    compile_fn = partial(torch.compile, backend=backend)
    hook = getattr(method, "compile_losses", None)
    if hook is not None:
        hook(compile_fn)
    return CompiledModel(model, compile_fn)


StepRunner = Callable[[Mapping[str, torch.Tensor], torch.Tensor, StepContext], "StepResult"]


def step_runner(
    method: Method,
    model: MultiModalModel,
    step_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    parameters: Sequence[nn.Parameter],
    cuda_graphs: bool,
    device: torch.device,
    world_size: int,
) -> StepRunner:
    """What takes one training step short of the trainer's checks: :func:`method_step` through
    ``step_model``, or its CUDA graph (``train.cuda_graphs``, refused with a reason where it cannot apply)."""
    if cuda_graphs:
        check_cuda_graphs(method, device, world_size)
        return CudaGraphStep(method, model, step_model, optimizer, parameters)
    return partial(_eager_step, method, model, step_model)


def _eager_step(method: Method, model: MultiModalModel, step_model, inputs, labels, step: StepContext) -> StepResult:
    return method_step(method, model, inputs, labels, step, step_model)


class CudaGraphStep:
    """The whole training step as one CUDA graph, captured once per batch shape and replayed.

    The first ``warmup`` full-size batches train eagerly on a side stream (cuDNN picks its algorithms,
    the optimiser creates its state); the next one is captured with the method's step told to keep every
    value on the device (``StepContext.device_solve``: ERL-MR then solves its Pareto weights there) and
    the optimiser update inside; every later batch of that shape is copied into the graph's inputs and
    the graph replayed. A batch of another shape (the last, smaller one) trains eagerly. The graph is
    captured again when an optimiser hyperparameter changes (a learning-rate schedule), since the graph
    holds its values as constants.

    Because the update is part of the graph, the trainer's check for NaN/Inf gradients runs after the
    update instead of before it; a diverged run still stops at that step and keeps its last checkpoint.
    """

    def __init__(
        self,
        method: Method,
        model: MultiModalModel,
        step_model: nn.Module,
        optimizer: torch.optim.Optimizer,
        parameters: Sequence[nn.Parameter],
        warmup: int = 3,
    ):
        self.method, self.model, self.step_model = method, model, step_model
        self.optimizer, self.parameters = optimizer, list(parameters)
        self.warmup = warmup
        self.stream = torch.cuda.Stream()
        self.graph: torch.cuda.CUDAGraph | None = None
        self.key: tuple | None = None
        self.shape: tuple | None = None
        self.warmed = 0

    def __call__(self, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext):
        shape = batch_shape(inputs, labels)
        self.shape = self.shape or shape
        if shape != self.shape:
            return method_step(self.method, self.model, inputs, labels, step, self.step_model)
        if self.warmed < self.warmup:
            self.warmed += 1
            return self.on_side_stream(inputs, labels, step)
        if self.graph is None or self.key != hyperparameters(self.optimizer):
            self.capture(inputs, labels, step)
        for name, tensor in inputs.items():
            self.inputs[name].copy_(tensor, non_blocking=True)
        self.labels.copy_(labels, non_blocking=True)
        self.graph.replay()
        for p, grad in zip(self.parameters, self.grads):
            p.grad = grad  # what the trainer checks; the graph wrote it in place
        step.optimizer_steps += 1  # the update was part of the graph
        return self.result

    def on_side_stream(self, inputs, labels, step: StepContext):
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            result = method_step(self.method, self.model, inputs, labels, step, self.step_model)
            step.finish(clear_gradients=False)
        torch.cuda.current_stream().wait_stream(self.stream)
        return result

    def capture(self, inputs, labels, step: StepContext) -> None:
        self.graph = None  # frees the previous graph's memory pool first
        self.inputs = {name: x.clone() for name, x in inputs.items()}
        self.labels = labels.clone()
        captured = StepContext(
            self.optimizer, self.parameters, step.epoch, step.index, step.steps_per_epoch, step.grad_clip, step.samples
        )
        captured.device_solve = True
        torch.cuda.synchronize()
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.result = method_step(self.method, self.model, self.inputs, self.labels, captured, self.step_model)
                captured.finish(clear_gradients=False)  # the graph's gradients stay where the trainer checks them
        except RuntimeError as error:
            raise ConfigError(
                f"train.cuda_graphs: the step of method {type(self.method).__name__} could not be captured as a "
                f"CUDA graph ({str(error).splitlines()[0]}); set train.cuda_graphs: false"
            ) from None
        self.graph, self.key = graph, hyperparameters(self.optimizer)
        self.grads = [p.grad for p in self.parameters]


def batch_shape(inputs: Mapping[str, torch.Tensor], labels: torch.Tensor) -> tuple:
    return tuple((name, tuple(x.shape), x.dtype) for name, x in inputs.items()) + (tuple(labels.shape),)


def hyperparameters(optimizer: torch.optim.Optimizer) -> tuple:
    """Every value of every parameter group but the parameters: what a captured update holds as constants."""
    return tuple(
        tuple(sorted((k, repr(v)) for k, v in group.items() if k != "params")) for group in optimizer.param_groups
    )


def check_cuda_graphs(method: Method, device: torch.device, world_size: int) -> None:
    """Refuse ``train.cuda_graphs`` where a captured step would not be the step the run asks for."""
    if device.type != "cuda":
        raise ConfigError(
            f"train.cuda_graphs captures the step as a CUDA graph, which needs a CUDA device "
            f"(train.device is {device}); "
            "set train.cuda_graphs: false"
        )
    if world_size > 1:
        raise ConfigError(
            "train.cuda_graphs is for one process; under torchrun the gradients are averaged between "
            "the step's passes, outside any graph. Set train.cuda_graphs: false"
        )
    if not getattr(method, "cuda_graph_safe", False):
        raise ConfigError(
            f"train.cuda_graphs: method {type(method).__name__} keeps Python state between steps "
            "(or reads values on the host), "
            "which a captured graph would freeze at its first step; only methods that declare cuda_graph_safe "
            "(joint, erlmr) can be captured. Set train.cuda_graphs: false"
        )
