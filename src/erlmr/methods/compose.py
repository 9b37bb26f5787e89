"""Build a method from its config name, including compositions such as ``erlmr+ogm_ge``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Collection, Mapping, cast

import torch
from torch import nn

from ..errors import ConfigError
from ..nn.model import ModelOutput, MultiModalModel
from .base import METHODS, Method, MethodContext, StepResult

if TYPE_CHECKING:
    from ..training.step import StepContext


class ComposedMethod(Method):
    """The first method takes the training step; every later one only modulates its gradients."""

    def __init__(self, parts: list[Method]):
        primary = parts[0]
        super().__init__(None, None, primary.context)
        self.parts = nn.ModuleList(parts)
        self.uses_euler = primary.uses_euler
        self.supports_missing_modalities = primary.supports_missing_modalities

    @property
    def primary(self) -> Method:
        return cast(Method, self.parts[0])

    @property
    def methods(self) -> list[Method]:
        """The parts, typed (an nn.ModuleList gives plain modules)."""
        return cast("list[Method]", list(self.parts))

    def training_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        result = self.primary.training_step(model, inputs, labels, step)
        if step.optimizer_steps:
            names = [type(part).__name__ for part in self.parts[1:]]
            raise ConfigError(
                f"{type(self.primary).__name__} updates the model itself during its step, so the gradient "
                f"modulators {names} after '+' would have nothing to modulate; run it without them"
            )
        return result

    def modify_gradients(self, model: MultiModalModel, result: StepResult, labels: torch.Tensor) -> None:
        for part in self.methods:
            part.modify_gradients(model, result, labels)

    def on_epoch_start(self, model: MultiModalModel, epoch: int) -> None:
        super().on_epoch_start(model, epoch)
        for part in self.methods:
            part.on_epoch_start(model, epoch)

    def on_epoch_end(self, model: MultiModalModel, epoch: int) -> dict[str, float]:
        logs: dict[str, float] = {}
        for part in self.methods:
            logs.update(part.on_epoch_end(model, epoch))
        return logs

    def predict(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], absent: Collection[str] = ()
    ) -> ModelOutput:
        return self.primary.predict(model, inputs, absent)


def method_class(name: str) -> type[Method]:
    """The class of a single method name, or of the primary part of a composition."""
    return METHODS.get(name.split("+")[0].strip())


def build_method(name: str, options: Mapping[str, Any], model: MultiModalModel, context: MethodContext) -> Method:
    """Instantiate ``name`` (``"a"`` or ``"a+b+..."``) with validated options.

    A single method takes its options directly; a composition takes one mapping per part, keyed by the
    part's name, e.g. ``{"erlmr": {...}, "ogm_ge": {"alpha": 0.3}}``.
    """
    names = [part.strip() for part in name.split("+")]
    if len(names) == 1:
        return _instantiate(names[0], options, model, context)
    classes = [METHODS.get(n) for n in names]
    followers = [n for n, cls in zip(names[1:], classes[1:]) if not cls.modulates_gradients]
    if followers:
        modulators = [n for n in METHODS if METHODS.get(n).modulates_gradients]
        raise ConfigError(
            f"cannot compose {name!r}: {followers} do not work by modulating gradients, so they cannot follow "
            f"another method after '+'; methods that can: {', '.join(modulators) or 'none'}"
        )
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ConfigError(f"options for a composed method are keyed by part name {names}; got {unknown}")
    return ComposedMethod([_instantiate(n, options.get(n, {}), model, context) for n in names])


def _instantiate(name: str, options: Mapping[str, Any], model: MultiModalModel, context: MethodContext) -> Method:
    return METHODS.get(name)(model, METHODS.options(name, options, where=f"method.options of {name!r}"), context)
