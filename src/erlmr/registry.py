"""Name → factory registries, one per kind of plug-in (methods, datasets, encoders, fusion heads)."""
from __future__ import annotations

from functools import cache
from typing import Any, Callable, Generic, Iterator, Mapping, Sequence, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories.

    ``@REGISTRY.register("name", "one-line description")`` adds a class or function; ``REGISTRY.get``
    looks one up and, for an unknown name, raises a :class:`ConfigError` that lists the valid names.

    Every entry's options are validated the same way (:meth:`options`): by the entry's ``Options``
    dataclass when it has one (methods), otherwise by a dataclass derived from its keyword parameters
    after ``positional`` (:func:`erlmr.options.options_from_signature`). An unknown option, a value of
    the wrong type or out of its declared range is a ConfigError that names it and lists the valid ones.
    """

    def __init__(self, kind: str, positional: Sequence[str] = ()):
        self.kind = kind
        self.positional = tuple(positional)
        self._entries: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
            self._descriptions[name] = description or (doc[0] if doc else "")
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(sorted(self._entries))}"
            )
        return self._entries[name]

    def options_type(self, name: str) -> type:
        """The dataclass that holds ``name``'s options."""
        entry = self.get(name)
        declared = getattr(entry, "Options", None)
        return declared if declared is not None else _derived_options(entry, self.positional, name)

    def options(self, name: str, values: Mapping[str, Any] | None, where: str | None = None) -> Any:
        """``values`` validated into ``name``'s options dataclass."""
        from .config import from_dict  # config imports nothing of the registries; this keeps it so

        return from_dict(self.options_type(name), values, where or f"options of {self.kind} {name!r}")

    def build(self, name: str, values: Mapping[str, Any] | None, *args: Any) -> Any:
        """Call the factory of ``name`` with ``args`` and its validated options as keyword arguments."""
        options = self.options(name, values)
        return self.get(name)(*args, **{key: getattr(options, key) for key in options.__dataclass_fields__})

    def describe(self) -> dict[str, str]:
        return {name: self._descriptions[name] for name in sorted(self._entries)}

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))


@cache
def _derived_options(entry: Any, positional: tuple[str, ...], name: str) -> type:
    from .options import options_from_signature

    return options_from_signature(entry, positional, name.replace("-", "_").title().replace("_", ""))
