"""Options dataclasses that check their own values: a range or a set of choices declared beside each field.

::

    @dataclass
    class MyOptions(CheckedOptions):
        alpha: float = ranged(0.1, ge=0)             # alpha >= 0
        floor: float = ranged(0.001, ge=0, lt=0.5)   # 0 <= floor < 0.5
        mode: str = one_of("params", ("params", "features"))

A value outside its range raises :class:`~erlmr.errors.ConfigError` naming the option, the rule and the
value as soon as the dataclass is built, i.e. before any data is loaded or any model is trained. NaN
fails every range.

Plug-ins that are functions or plain modules (datasets, encoders, fusion heads) declare their options
as keyword parameters instead, with the range in the annotation::

    def load(root, seed, val_fraction, frames: Annotated[int, Bounds(ge=1)] = 1) -> DatasetSplits: ...

and :func:`options_from_signature` turns the signature into the same kind of dataclass, so every
registry validates options the one way: :meth:`erlmr.registry.Registry.options`.
"""
from __future__ import annotations

import dataclasses
import inspect
import operator
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .errors import ConfigError

_COMPARISONS = {"ge": (operator.ge, ">="), "gt": (operator.gt, ">"), "le": (operator.le, "<="), "lt": (operator.lt, "<")}


def ranged(default: float, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
           lt: float | None = None) -> Any:
    """A dataclass field whose value must satisfy every bound given (``ge`` means ``value >= ge``)."""
    bounds = {name: limit for name, limit in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if limit is not None}
    return field(default=default, metadata={"bounds": bounds})


def one_of(default: str, choices: Sequence[str]) -> Any:
    """A dataclass field whose value must be one of ``choices``."""
    return field(default=default, metadata={"choices": tuple(choices)})


def check_field(name: str, value: Any, metadata: Mapping[str, Any]) -> None:
    choices = metadata.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"option {name} is {value!r}; valid: {', '.join(map(str, choices))}")
    bounds = metadata.get("bounds", {})
    if value is None:  # an optional value left unset
        return
    if not all(_COMPARISONS[key][0](value, limit) for key, limit in bounds.items()):
        rule = " and ".join(f"{_COMPARISONS[key][1]} {limit}" for key, limit in bounds.items())
        raise ConfigError(f"option {name} must be {rule}, got {value}")


@dataclass
class CheckedOptions:
    """Base of an options dataclass: checks every field declared with :func:`ranged` or :func:`one_of`.

    A subclass that defines its own ``__post_init__`` calls ``super().__post_init__()`` first.
    """

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            check_field(spec.name, getattr(self, spec.name), spec.metadata)


@dataclass(frozen=True)
class Bounds:
    """The range of a plug-in function's keyword option, declared in its annotation:
    ``frames: Annotated[int, Bounds(ge=1)] = 1`` is what :func:`ranged` is for a dataclass field."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def metadata(self) -> dict[str, Any]:
        return {"bounds": {k: v for k, v in dataclasses.asdict(self).items() if v is not None}}


@dataclass(frozen=True)
class Choices:
    """The valid values of a plug-in function's keyword option: ``Annotated[str, Choices(("a", "b"))]``."""

    values: tuple

    def metadata(self) -> dict[str, Any]:
        return {"choices": tuple(self.values)}


def options_from_signature(factory: Callable, positional: Sequence[str], name: str) -> type:
    """An options dataclass (a :class:`CheckedOptions`) with one field per keyword parameter of
    ``factory`` after its first ``len(positional)`` parameters (whatever they are called, so a user's
    factory may name them as it likes): its type, its default, and the range or choices declared with
    :class:`Bounds` / :class:`Choices` in an ``Annotated`` type."""
    target = factory.__init__ if isinstance(factory, type) else factory
    hints = typing.get_type_hints(target, include_extras=True)
    fields = []
    parameters = list(inspect.signature(factory).parameters.values())[len(positional):]
    for parameter in parameters:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        hint, metadata = _split_annotation(hints.get(parameter.name, Any))
        default = dataclasses.MISSING if parameter.default is parameter.empty else parameter.default
        fields.append((parameter.name, hint, field(default=default, metadata=metadata)))
    fields.sort(key=lambda f: f[2].default is not dataclasses.MISSING)  # required fields first
    return dataclasses.make_dataclass(f"{name}Options", fields, bases=(CheckedOptions,))


def _split_annotation(hint: Any) -> tuple[Any, dict[str, Any]]:
    if typing.get_origin(hint) is not typing.Annotated:
        return hint, {}
    base, *extras = typing.get_args(hint)
    metadata: dict[str, Any] = {}
    for extra in extras:
        if isinstance(extra, (Bounds, Choices)):
            metadata.update(extra.metadata())
    return base, metadata
