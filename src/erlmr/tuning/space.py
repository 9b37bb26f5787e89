"""The search space of one tuned method: the shared ranges, the method's own, and the user's changes.

A space maps config keys (``optim.lr``, ``method.options.alpha``; ``method.options.ogm_ge.alpha`` for a
part of a composition) to search ranges (:mod:`erlmr.options`). The user writes keys as
``SECTION.KEY`` for any config key (shared by every tuned method) or ``METHOD.OPTION`` for one method's
option, in the config's ``tune: {space: {...}}`` section or with ``erlmr tune --space KEY=RANGE``;
``fixed`` (or YAML null) takes a key out of the space.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping, Sequence

from ..config import SHARED_SPACE, TUNE_SECTION, Config, load_config, read_config_file, yaml_value
from ..errors import ConfigError
from ..options import Distribution, check_search, option_fields, parse_distribution

#: the config sections a shared space key may name (``method`` is named per method: ``ogm_ge.alpha``)
SHARED_SECTIONS = ("data", "model", "optim", "train")
#: the word that takes a key out of the space
FIXED = "fixed"

UserSpace = dict[str, Distribution | None]


def read_user_space(config_path: str | None, cli: Sequence[str]) -> UserSpace:
    """The user's space changes: the config file's ``tune.space`` mapping, then each ``--space KEY=RANGE``."""
    section = read_config_file(config_path).get(TUNE_SECTION) or {}
    if not isinstance(section, Mapping) or set(section) - {"space"}:
        raise ConfigError(f"the config's {TUNE_SECTION}: section holds one key, space: a mapping of KEY: RANGE")
    entries = dict(section.get("space") or {})
    for text in cli:
        if "=" not in text:
            raise ConfigError(f"--space {text!r} must look like KEY=RANGE, e.g. optim.lr=log_uniform(0.001,0.1)")
        key, value = text.split("=", 1)
        entries[key.strip()] = value.strip()
    return {key: _parse_entry(key, value) for key, value in entries.items()}


def _parse_entry(key: str, value: Any) -> Distribution | None:
    if value is None or str(value).strip() == FIXED:
        return None
    try:
        return parse_distribution(value)
    except ConfigError as error:
        raise ConfigError(f"search space key {key}: {error}") from None


def method_space(name: str, fixed_options: Mapping[str, Any], user: UserSpace) -> dict[str, Distribution]:
    """The space of method ``name`` (``"a"`` or ``"a+b"``), leaving out the options a grid spec fixes."""
    from ..methods import METHODS

    parts = [part.strip() for part in name.split("+")]
    prefixes = {part: "method.options." if len(parts) == 1 else f"method.options.{part}." for part in parts}
    space: dict[str, Distribution] = dict(SHARED_SPACE)
    for part in parts:
        for option, (hint, metadata) in option_fields(METHODS.get(part).Options).items():
            if "search" in metadata and option not in fixed_options:
                check_search(f"{part}.{option}", metadata["search"], metadata, hint)
                space[prefixes[part] + option] = metadata["search"]
    for key, distribution in user.items():
        head, _, rest = key.partition(".")
        if head in prefixes:
            _apply(space, prefixes[head] + rest, distribution)
        elif head in SHARED_SECTIONS:
            _apply(space, key, distribution)
    return space


def _apply(space: dict[str, Distribution], key: str, distribution: Distribution | None) -> None:
    if distribution is None:
        space.pop(key, None)
    else:
        space[key] = distribution


def check_user_space(user: UserSpace) -> None:
    """Every key names a registered method's option or a config key, and its range fits that value."""
    from ..methods import METHODS

    metadata: Mapping[str, Any]
    for key, distribution in user.items():
        head, _, rest = key.partition(".")
        if head in SHARED_SECTIONS:
            hint, metadata = _config_field(key), {}
        elif head in METHODS:
            fields = option_fields(METHODS.get(head).Options)
            if rest not in fields:
                raise ConfigError(
                    f"search space key {key}: method {head!r} has no option {rest!r}; "
                    f"its options: {', '.join(fields) or 'none'}"
                )
            hint, metadata = fields[rest]
        else:
            raise ConfigError(
                f"search space key {key}: {head!r} is neither a registered method ({', '.join(METHODS)}) nor a "
                f"config section ({', '.join(SHARED_SECTIONS)}); write METHOD.OPTION or SECTION.KEY"
            )
        if distribution is not None:
            check_search(key, distribution, metadata, hint)
            if head in SHARED_SECTIONS:
                for value in distribution.values():
                    load_config(None, [f"{key}={yaml_value(value)}"])


def _config_field(key: str) -> Any:
    """The type of config key ``key`` (e.g. ``optim.lr`` → float), or a ConfigError naming the valid keys."""
    cls: Any = Config
    for depth, name in enumerate(key.split(".")):
        if not dataclasses.is_dataclass(cls):
            raise ConfigError(f"search space key {key}: {'.'.join(key.split('.')[:depth])} is not a config section")
        hints = typing.get_type_hints(cls)
        if name not in hints:
            raise ConfigError(f"search space key {key}: unknown config key {name!r}; valid: {', '.join(hints)}")
        cls = hints[name]
    return cls


def default_values(space: Mapping[str, Distribution], config: Config) -> dict[str, Any]:
    """Each space key's value in ``config`` (the method's default when the config does not set it),
    for the keys whose default lies inside its range: the study's first trial."""
    from ..methods import METHODS

    values = {}
    data = config.to_dict()
    for key in space:
        node: Any = data
        for name in key.split("."):
            node = node.get(name) if isinstance(node, Mapping) else None
        if node is None and key.startswith("method.options."):
            node = _option_default(METHODS, config.method.name, key.removeprefix("method.options."))
        if node is not None and _inside(space[key], node):
            values[key] = node
    return values


def _option_default(methods: Any, name: str, path: str) -> Any:
    part, option = (name, path) if "+" not in name else path.split(".", 1)
    fields = {f.name: f for f in dataclasses.fields(methods.get(part).Options)}
    spec = fields.get(option)
    return None if spec is None or spec.default is dataclasses.MISSING else spec.default


def _inside(distribution: Distribution, value: Any) -> bool:
    if hasattr(distribution, "choices"):
        return value in distribution.choices
    return distribution.low <= value <= distribution.high


def suggest(trial: Any, space: Mapping[str, Distribution]) -> dict[str, Any]:
    """One value per space key from an Optuna trial (the key is the parameter's name)."""
    return {key: distribution.suggest(trial, key) for key, distribution in space.items()}


def as_overrides(values: Mapping[str, Any]) -> list[str]:
    """``{"optim.lr": 0.02}`` → ``["optim.lr=0.02"]``, values written so that YAML reads them back."""
    return [f"{key}={yaml_value(value)}" for key, value in values.items()]


def describe(space: Mapping[str, Distribution]) -> dict[str, str]:
    return {key: str(distribution) for key, distribution in space.items()}
