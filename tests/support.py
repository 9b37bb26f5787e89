"""Builders shared by the tests: a model for a dataset, a method's context, one training step."""
from __future__ import annotations

import torch

from erlmr.config import ModelConfig
from erlmr.data import DatasetSplits
from erlmr.encoders import default_encoder_for
from erlmr.methods import Method, MethodContext
from erlmr.methods.base import StepResult
from erlmr.nn.model import MultiModalModel
from erlmr.training.builders import ModelSpec, build_model, trainable_parameters
from erlmr.training.step import StepContext, method_step


def model_for(config: ModelConfig, splits: DatasetSplits, euler: bool) -> MultiModalModel:
    """The model ``config`` builds for ``splits`` (encoders named in the config or chosen by shape)."""
    shapes = splits.input_shapes()
    names = {m: config.encoders.get(m) or splits.default_encoders.get(m) or default_encoder_for(shapes[m]) for m in splits.modalities}
    return build_model(config, ModelSpec(list(splits.modalities), shapes, names, splits.num_classes, euler))


def context_for(splits: DatasetSplits, batch_size: int = 16, device: str = "cpu") -> MethodContext:
    return MethodContext(splits.modalities, splits.num_classes, batch_size, torch.device(device), splits)


def step_context(method: Method, model: MultiModalModel, optimizer=None, index: int = 0, steps_per_epoch: int = 1) -> StepContext:
    """A step context over the model's and the method's parameters (an SGD with lr 0 if none is given)."""
    params = trainable_parameters(model, method)
    optimizer = optimizer or torch.optim.SGD(params, lr=0.0)
    return StepContext(optimizer, params, method.epoch, index, steps_per_epoch)


def take_step(method: Method, model: MultiModalModel, inputs, labels, optimizer=None, **where) -> StepResult:
    """One training step as the trainer takes it, without the final update: gradients end in ``.grad``."""
    return method_step(method, model, inputs, labels, step_context(method, model, optimizer, **where))
