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
"""
from __future__ import annotations

import dataclasses
import inspect
import operator
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping, Sequence

from .config import coerce
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


def call_options(what: str, factory: Callable, options: Any, skip: Collection[str]) -> dict[str, Any]:
    """``options`` checked for ``factory(..., **options)`` (an encoder factory, a fusion head class): a mapping
    of its parameter names (other than ``skip``) to values of the types its annotations name."""
    if not isinstance(options, Mapping):
        raise ConfigError(f"{what} takes a mapping of option names to values, got {options!r}")
    signature = inspect.signature(factory)
    valid = [name for name in signature.parameters if name not in skip]
    unknown = sorted(str(key) for key in options if key not in valid)
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for {what}; valid options: {', '.join(valid) or 'none'}")
    hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    return {key: coerce(value, hints[key], f"{what}: option {key}") if key in hints else value for key, value in options.items()}
