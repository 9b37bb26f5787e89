"""Builders shared by the tests: a model for a dataset, a method's context, one training step."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from erlmr.config import ModelConfig
from erlmr.data import DatasetSplits, load_dataset
from erlmr.encoders import default_encoder_for
from erlmr.methods import Method, MethodContext, build_method, method_class
from erlmr.methods.base import StepResult
from erlmr.nn.model import MultiModalModel
from erlmr.training.builders import ModelSpec, build_model, trainable_parameters
from erlmr.training.step import StepContext, method_step


def model_for(config: ModelConfig, splits: DatasetSplits, euler: bool) -> MultiModalModel:
    """The model ``config`` builds for ``splits`` (encoders named in the config or chosen by shape)."""
    shapes = splits.input_shapes()
    names = {
        m: config.encoders.get(m) or splits.default_encoders.get(m) or default_encoder_for(shapes[m])
        for m in splits.modalities
    }
    return build_model(config, ModelSpec(list(splits.modalities), shapes, names, splits.num_classes, euler))


def context_for(splits: DatasetSplits, batch_size: int = 16, device: str = "cpu") -> MethodContext:
    return MethodContext(splits.modalities, splits.num_classes, batch_size, torch.device(device), splits)


def step_context(
    method: Method, model: MultiModalModel, optimizer=None, index: int = 0, steps_per_epoch: int = 1
) -> StepContext:
    """A step context over the model's and the method's parameters (an SGD with lr 0 if none is given)."""
    params = trainable_parameters(model, method)
    optimizer = optimizer or torch.optim.SGD(params, lr=0.0)
    return StepContext(optimizer, params, method.epoch, index, steps_per_epoch)


def take_step(method: Method, model: MultiModalModel, inputs, labels, optimizer=None, **where) -> StepResult:
    """One training step as the trainer takes it, without the final update: gradients end in ``.grad``."""
    return method_step(method, model, inputs, labels, step_context(method, model, optimizer, **where))


# ----------------------------------------------------------------------------------- method tests
SMALL_SYNTHETIC = {"strengths": [2.5, 1.0, 0.8], "train_size": 96, "test_size": 48, "dim": 8}


def method_setup(
    method: str, options: dict | None = None, strengths=(2.5, 0.8), fusion="concat", euler=False, hidden=16
):
    """``method`` on a small two-modality synthetic set (dominant m0): splits, model, method, context."""
    splits = load_dataset(
        "synthetic", None, 0, 0.1, {"strengths": list(strengths), "dim": 8, "train_size": 64, "test_size": 8}
    )
    config = ModelConfig(
        fusion=fusion,
        encoder_options={m: {"hidden": hidden} for m in splits.modalities},
        euler_dim=8,
        euler_dropout=0.0,
    )
    torch.manual_seed(0)
    model = model_for(config, splits, euler)
    context = context_for(splits, 16)
    return splits, model, build_method(method, options or {}, model, context), context


def setup_three(method: str, options: dict | None = None, model_config: ModelConfig | None = None, seed: int = 0):
    """``method`` on a small three-modality synthetic set (with the Euler map where the method uses it):
    splits, model, method."""
    torch.manual_seed(seed)
    splits = load_dataset("synthetic", None, 0, 0.25, SMALL_SYNTHETIC)
    config = model_config or ModelConfig(encoder_options={m: {"hidden": 16} for m in splits.modalities}, euler_dim=8)
    model = model_for(config, splits, method_class(method).uses_euler)
    return splits, model, build_method(method, options or {}, model, context_for(splits, 32))


def first_batch(splits, size: int = 32):
    return splits.train.__getitems__(range(size))


def joint_gradients(model, inputs, labels) -> dict[str, torch.Tensor]:
    """Every parameter's gradient of plain joint training on a copy of ``model``."""
    twin = copy.deepcopy(model)
    F.cross_entropy(twin(inputs).logits, labels).backward()
    return {name: p.grad for name, p in twin.named_parameters() if p.grad is not None}


def step(method, model, inputs, labels):
    return take_step(method, model, inputs, labels)


def true_class_sums(output, modalities, labels) -> torch.Tensor:
    return torch.stack([output.modality_logits[m].softmax(1).gather(1, labels[:, None]).sum() for m in modalities])


def expected_ogm_coefficients(scores: torch.Tensor, alpha: float) -> torch.Tensor:
    others = torch.stack([torch.cat([scores[:m], scores[m + 1 :]]).mean() for m in range(len(scores))])
    ratios = scores / others
    return torch.where(ratios > 1, 1 - torch.tanh(alpha * ratios), torch.ones_like(ratios))


def assert_encoder_scaling(model, reference, coefficients: dict[str, float]):
    """Encoder m's gradient is ``coefficients[m]`` × the joint one; everything else is unchanged."""
    for name, p in model.named_parameters():
        parts = name.split(".")
        k = coefficients[parts[1]] if parts[0] == "encoders" else 1.0
        torch.testing.assert_close(p.grad, reference[name] * k, msg=f"gradient of {name}")


class RecordingOptimizer:
    """Stands in for the trainer's optimiser: records the head gradient and MLA's projection at each
    step, changes nothing."""

    def __init__(self, model, method):
        self.model, self.head_grads, self.projections, self.method = model, [], [], method
        self.state = {}

    def step(self):
        self.head_grads.append(self.method.head.weight.grad.clone())
        self.projections.append(self.method.projection.clone())

    def zero_grad(self, set_to_none=True):
        self.model.zero_grad(set_to_none=True)
        self.method.zero_grad(set_to_none=True)


def small_trainer(run_config, method="erlmr", options=None, **sections):
    """A Trainer for ``method`` on small synthetic data (no Euler dropout); ``run_config`` is the fixture."""
    from erlmr.training.trainer import Trainer

    config = run_config(method={"name": method, "options": options or {}}, **sections)
    config["data"] = {"dataset": "synthetic", "options": {"train_size": 64, "test_size": 32}}
    config["model"] = {"euler_dropout": 0.0, **config.get("model", {})}
    return Trainer(config)


def one_batch(trainer, size=32):
    return trainer.splits.train.__getitems__(list(range(size)))
