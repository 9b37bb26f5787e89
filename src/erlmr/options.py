"""Options dataclasses that check their own values, and the search ranges that ``erlmr tune`` explores.

A range or a set of choices is declared beside each field, and so is its search range, if it has one::

    @dataclass
    class MyOptions(CheckedOptions):
        alpha: float = ranged(0.1, ge=0, search=log_uniform(0.01, 1.0))   # alpha >= 0, tuned on a log scale
        floor: float = ranged(0.001, ge=0, lt=0.5)                          # 0 <= floor < 0.5, not tuned
        window: int = ranged(10, ge=1, search=int_range(2, 20))
        mode: str = one_of("params", ("params", "features"), search=True)   # every choice is tried

A value outside its range raises :class:`~erlmr.errors.ConfigError` naming the option, the rule and the
value as soon as the dataclass is built, i.e. before any data is loaded or any model is trained. NaN
fails every range. A search range must lie inside the field's bounds and fit its type; that is
checked whenever a space is collected. :func:`search_space` collects a dataclass's search ranges;
:func:`parse_distribution` reads one from text such as ``"log_uniform(0.05, 0.5)"`` (the form the config's
``tune:`` section and ``erlmr tune --space`` use).

Plug-ins that are functions or plain modules (datasets, encoders, fusion heads) declare their options
as keyword parameters instead, with the range in the annotation::

    def load(root, seed, val_fraction, frames: Annotated[int, Bounds(ge=1)] = 1) -> DatasetSplits: ...

and :func:`options_from_signature` turns the signature into the same kind of dataclass, so every
registry validates options the one way: :meth:`erlmr.registry.Registry.options`.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import operator
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import yaml

from .errors import ConfigError


class NumberLoader(yaml.SafeLoader):
    """YAML's safe loader that also reads ``1e-5`` as a float (YAML 1.1 wants ``1.0e-5``)."""


NumberLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"), list("-+0123456789.")
)

_COMPARISONS = {
    "ge": (operator.ge, ">="),
    "gt": (operator.gt, ">"),
    "le": (operator.le, "<="),
    "lt": (operator.lt, "<"),
}


@dataclass(frozen=True)
class Uniform:
    """Floats from ``low`` to ``high``, uniform on a log scale when ``log`` (then ``low > 0``)."""

    low: float
    high: float
    log: bool = False

    def check(self) -> None:
        numbers = all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (self.low, self.high)
        )
        if not numbers or not self.low < self.high:
            raise ConfigError(f"{self} is an empty or inverted range; give finite numbers with low < high")
        if self.log and self.low <= 0:
            raise ConfigError(f"{self} needs low > 0 (a log scale); use uniform(...) to include 0")

    def values(self) -> tuple:
        return (self.low, self.high)

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def __str__(self) -> str:
        return f"{'log_' if self.log else ''}uniform({self.low}, {self.high})"


@dataclass(frozen=True)
class IntRange:
    """Integers from ``low`` to ``high`` inclusive, uniform on a log scale when ``log``."""

    low: int
    high: int
    log: bool = False

    def check(self) -> None:
        integers = all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high))
        if not integers or not self.low < self.high:
            raise ConfigError(f"{self} is an empty or inverted range; give integers with low < high")
        if self.log and self.low <= 0:
            raise ConfigError(f"{self} needs low > 0 (a log scale); use int_range(...) to include 0")

    def values(self) -> tuple:
        return (self.low, self.high)

    def suggest(self, trial: Any, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log)

    def __str__(self) -> str:
        return f"{'log_' if self.log else ''}int_range({self.low}, {self.high})"


@dataclass(frozen=True)
class Choice:
    """One of a few values (numbers, strings or booleans)."""

    choices: tuple

    def check(self) -> None:
        if len(set(map(repr, self.choices))) < 2:
            raise ConfigError(
                f"{self} offers fewer than two distinct values: nothing to search; fix the value with --set"
            )

    def values(self) -> tuple:
        return self.choices

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))

    def __str__(self) -> str:
        return f"choice({', '.join(map(repr, self.choices))})"


Distribution = Uniform | IntRange | Choice


def uniform(low: float, high: float) -> Uniform:
    return Uniform(low, high)


def log_uniform(low: float, high: float) -> Uniform:
    return Uniform(low, high, log=True)


def int_range(low: int, high: int) -> IntRange:
    return IntRange(low, high)


def log_int_range(low: int, high: int) -> IntRange:
    return IntRange(low, high, log=True)


def choice(*values: Any) -> Choice:
    return Choice(tuple(values))


DISTRIBUTIONS = {f.__name__: f for f in (uniform, log_uniform, int_range, log_int_range, choice)}
DISTRIBUTION_FORMS = (
    "uniform(low, high), log_uniform(low, high), int_range(low, high), log_int_range(low, high), choice(a, b, ...)"
)


def parse_distribution(text: str) -> Distribution:
    """``"log_uniform(0.05, 0.5)"`` → ``Uniform(0.05, 0.5, log=True)``; the arguments are read as YAML."""
    match = re.fullmatch(r"\s*(\w+)\s*\((.*)\)\s*", str(text), re.DOTALL)
    maker = DISTRIBUTIONS.get(match.group(1)) if match else None
    if maker is None:
        raise ConfigError(f"search range {text!r} is not one of {DISTRIBUTION_FORMS}")
    try:
        arguments = yaml.load(f"[{match.group(2)}]", Loader=NumberLoader)
        distribution = maker(*arguments)
    except (yaml.YAMLError, TypeError):
        raise ConfigError(f"search range {text!r}: bad arguments; the forms are {DISTRIBUTION_FORMS}") from None
    distribution.check()
    return distribution


def ranged(
    default: float | None,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    search: Uniform | IntRange | Choice | None = None,
) -> Any:
    """A dataclass field whose value must satisfy every bound given (``ge`` means ``value >= ge``);
    ``search`` is the range ``erlmr tune`` explores, which must lie inside the bounds."""
    bounds = {name: limit for name, limit in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if limit is not None}
    metadata: dict[str, Any] = {"bounds": bounds}
    if search is not None:
        search.check()
        metadata["search"] = search
    return field(default=default, metadata=metadata)


def one_of(default: str, choices: Sequence[str], search: bool | Sequence[str] = False) -> Any:
    """A dataclass field whose value must be one of ``choices``; ``search=True`` tunes over all of them,
    a sequence over those it names."""
    metadata: dict[str, Any] = {"choices": tuple(choices)}
    if search:
        distribution = Choice(tuple(choices) if search is True else tuple(search))
        distribution.check()
        metadata["search"] = distribution
    return field(default=default, metadata=metadata)


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


#: the field types each kind of search range can fill
FITTING_TYPES = {Uniform: (float,), IntRange: (int, float), Choice: (int, float, str, bool)}


def check_search(name: str, distribution: Distribution, metadata: Mapping[str, Any], hint: Any = None) -> None:
    """Every value ``distribution`` can take must be a valid value of the field: its type ``hint`` (when
    known), its bounds and its choices."""
    if hint is not None and (
        hint not in FITTING_TYPES[type(distribution)] or not all(_fits(v, hint) for v in distribution.values())
    ):
        raise ConfigError(f"search range {distribution} does not fit {name}, of type {getattr(hint, '__name__', hint)}")
    for value in distribution.values():
        try:
            check_field(name, value, metadata)
        except ConfigError as error:
            raise ConfigError(f"search range {distribution} leaves the valid values: {error}") from None


def _fits(value: Any, hint: type) -> bool:
    if isinstance(value, bool) or hint is bool:
        return isinstance(value, bool) and hint is bool
    return isinstance(value, (int, float) if hint is float else hint)


def option_fields(cls: type) -> dict[str, tuple[Any, Mapping[str, Any]]]:
    """Each field of the options dataclass ``cls``: its type and its metadata."""
    if not dataclasses.is_dataclass(cls):
        return {}
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], f.metadata) for f in dataclasses.fields(cls)}


def search_space(cls: type, where: str = "options") -> dict[str, Distribution]:
    """The declared search ranges of the options dataclass ``cls``, by field name, each checked against
    its field's type, bounds and choices."""
    space = {}
    for name, (hint, metadata) in option_fields(cls).items():
        if "search" in metadata:
            check_search(f"{where}.{name}", metadata["search"], metadata, hint)
            space[name] = metadata["search"]
    return space


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
    # A class's own __init__ carries the annotations (mypy calls reading it off a class unsound).
    target = factory.__init__ if isinstance(factory, type) else factory  # type: ignore[misc]
    hints = typing.get_type_hints(target, include_extras=True)
    fields = []
    parameters = list(inspect.signature(factory).parameters.values())[len(positional) :]
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
