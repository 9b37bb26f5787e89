"""Name → factory registries, one per kind of plug-in (methods, datasets, encoders, fusion heads).

A name is resolved in three places, in order:

1. what erlmr registers itself with ``@REGISTRY.register``;
2. plug-ins: entry points in the group ``erlmr.<kind>s`` (``erlmr.encoders``, ``erlmr.methods``,
   ``erlmr.datasets``, ``erlmr.fusions``) of any installed distribution, e.g. in the user's
   pyproject.toml ``[project.entry-points."erlmr.encoders"] my_cnn = "my_pkg.encoders:MyCNN"``;
3. an import path ``module:attribute`` (``my_pkg.my_module:MyEncoder``), imported as Python imports it,
   with the current folder on the path as under ``python -m``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import warnings
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Generic, Iterator, Mapping, Sequence, TypeVar, cast

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories, extended by entry-point plug-ins and ``module:attribute`` paths.

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
        self.group = f"erlmr.{kind}s"
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
        if not isinstance(name, str):
            raise ConfigError(f"{self.kind} names are strings, got {name!r}; valid {self.kind}s: {', '.join(self)}")
        if name in self._entries:
            return self._entries[name]
        plugin = self.plugins().get(name)
        if plugin is not None:
            return self._load(plugin.value, f"plug-in {name!r} (entry point {plugin.value!r} in group {self.group!r})")
        if ":" in name:
            return self._load(name, repr(name))
        raise ConfigError(
            f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self)}; or give an import path "
            f"'module:attribute', or install a package with an entry point in group {self.group!r}"
        )

    def plugins(self) -> dict[str, EntryPoint]:
        """Entry points of this registry's group, read afresh each time (a package may be installed since).

        A plug-in whose name erlmr registers itself is skipped with a warning: the built-in one wins.
        """
        found: dict[str, EntryPoint] = {}
        for point in entry_points(group=self.group):
            if point.name in self._entries:
                warnings.warn(
                    f"{self.kind} plug-in {point.name!r} ({point.value}) is shadowed by erlmr's own {point.name!r}",
                    stacklevel=2,
                )
            else:
                found.setdefault(point.name, point)
        return found

    def _load(self, path: str, what: str) -> T:
        module_name, _, attribute = path.partition(":")
        if not module_name or not attribute:
            raise ConfigError(f"{self.kind} {what}: an import path is 'module:attribute', got {path!r}")
        module = import_user_module(module_name, f"{self.kind} {what}")
        obj = module
        for part in attribute.split("."):
            if not hasattr(obj, part):
                raise ConfigError(f"{self.kind} {what}: module {module_name!r} has no attribute {attribute!r}")
            obj = getattr(obj, part)
        if not callable(obj):
            raise ConfigError(f"{self.kind} {what}: {path} is a {type(obj).__name__}, not a class or function")
        return obj

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
        """Call the factory of ``name`` with ``args`` and its validated options as keyword arguments (a
        factory that takes ``**kwargs`` gets the options as given and checks them itself)."""
        factory = cast(Callable[..., Any], self.get(name))  # the registries that build hold factories
        if _takes_any_keyword(factory):
            return factory(*args, **dict(values or {}))
        options = self.options(name, values)
        return factory(*args, **{key: getattr(options, key) for key in options.__dataclass_fields__})

    def describe(self) -> dict[str, str]:
        """Name → one-line description, plug-ins included (described by their entry point, not imported)."""
        described = {name: self._descriptions[name] for name in self._entries}
        for name, point in self.plugins().items():
            source = f" (from {point.dist.name})" if point.dist is not None else ""
            described[name] = f"plug-in {point.value}{source}"
        return dict(sorted(described.items()))

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in self.plugins()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted({*self._entries, *self.plugins()}))


def _takes_any_keyword(factory: Any) -> bool:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


@cache
def _derived_options(entry: Any, positional: tuple[str, ...], name: str) -> type:
    from .options import options_from_signature

    clean = "".join(c if c.isalnum() else "_" for c in name)
    return options_from_signature(entry, positional, clean.title().replace("_", ""))


def import_user_module(name: str, needed_by: str):
    """Import ``name``; when it is not found, try again with the current folder on the path.

    The ``erlmr`` console script does not put the current folder on ``sys.path`` (``python -m`` does), and
    a user's own encoder usually lives there.
    """
    here = os.getcwd()
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if not is_missing(error, name):  # the module exists; something it imports does not
            raise ConfigError(f"{needed_by}: cannot import {name!r}: {error}") from None
        if here not in sys.path:
            sys.path.append(here)
            return import_user_module(name, needed_by)
        raise ConfigError(
            f"{needed_by}: cannot import {name!r}: {error}; put its folder on PYTHONPATH or install its package"
        ) from None


def is_missing(error: ModuleNotFoundError, name: str) -> bool:
    """Whether ``error`` is about ``name`` (or a parent package of it), not about something it imports."""
    return error.name is not None and (name == error.name or name.startswith(error.name + "."))
