"""Name → factory registries, one per kind of plug-in (methods, datasets, encoders, fusion heads)."""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories.

    ``@REGISTRY.register("name", "one-line description")`` adds a class or function; ``REGISTRY.get``
    looks one up and, for an unknown name, raises a :class:`ConfigError` that lists the valid names.
    """

    def __init__(self, kind: str):
        self.kind = kind
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
        if not isinstance(name, str) or name not in self._entries:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(sorted(self._entries))}"
            )
        return self._entries[name]

    def describe(self) -> dict[str, str]:
        return {name: self._descriptions[name] for name in sorted(self._entries)}

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))
