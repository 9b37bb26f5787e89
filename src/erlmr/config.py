"""Run configuration: plain YAML validated into typed dataclasses, with ``section.key=value`` overrides."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import yaml

from .errors import ConfigError
from .options import NumberLoader, log_uniform


@dataclass
class DataConfig:
    dataset: str = "synthetic"
    root: Optional[str] = None
    val_fraction: float = 0.1
    options: dict = field(default_factory=dict)
    #: input normalisation with train-split statistics; auto = the dataset's own default (docs/datasets.md)
    normalize: str = "auto"


@dataclass
class ModelConfig:
    encoders: dict = field(default_factory=dict)
    encoder_options: dict = field(default_factory=dict)
    fusion: str = "concat"
    fusion_options: dict = field(default_factory=dict)
    euler: Optional[bool] = None
    euler_dim: int = 128
    euler_dropout: float = 0.5
    shared_projection: bool = True


@dataclass
class MethodConfig:
    name: str = "joint"
    options: dict = field(default_factory=dict)


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "none"
    step_size: int = 10
    gamma: float = 0.1
    #: clip the gradients to this global norm before every update; 0 leaves them alone
    grad_clip: float = 0.0


#: the search ranges every method is tuned over besides its own (``erlmr tune``; docs/protocol.md)
SHARED_SPACE = {
    "optim.lr": log_uniform(1e-3, 1e-1),
    "optim.weight_decay": log_uniform(1e-5, 1e-2),
}


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 16
    seed: int = 0
    device: str = "auto"
    out: str = "runs"
    run_dir: Optional[str] = None
    quiet: bool = False
    num_workers: int = 0
    tensorboard: bool = False
    amp: Optional[bool] = None
    compile: bool = False
    #: convolution weights stored channels-last (NHWC), the layout tensor cores read (erlmr.training.acceleration)
    channels_last: bool = False
    #: the whole training step captured as one CUDA graph and replayed (CUDA, methods that allow it)
    cuda_graphs: bool = False
    #: warn (epoch log, summary.json) when a modality stays at chance though its inputs are informative
    imbalance_alarm: bool = True
    #: at the end: a linear probe of each modality's features (docs/metrics.md), needs erlmr[probes]
    linear_probe: bool = True
    #: at the end: a 2-D t-SNE map of each modality's test features for erlmr report, needs erlmr[probes]
    feature_maps: bool = True


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "cosine")
NORMALIZE = ("auto", "standard", "robust", "minmax", "none")
MAX_SEED = 2**32 - 1


def from_dict(cls: type, data: Mapping[str, Any] | None, where: str = "config") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and values of the wrong type."""
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping of keys to values, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(key) for key in data if key not in names)
    if unknown:
        valid = f"valid keys: {', '.join(names)}" if names else "it takes none"
        raise ConfigError(f"unknown key(s) {unknown} in {where}; {valid}")
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in data and _required(f)]
    if missing:
        raise ConfigError(f"{where} needs {', '.join(missing)}; give {' and '.join(f'{m}=...' for m in missing)}")
    values = {}
    for name, value in data.items():
        hint = hints[name]
        key = f"{where}.{name}" if where != "config" else name
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            values[name] = from_dict(hint, value, key)
        else:
            values[name] = _coerce(value, hint, key)
    try:
        return cls(**values)
    except ConfigError as error:  # a range check in the dataclass's __post_init__
        raise ConfigError(f"{where}: {error}") from None


def _required(spec: dataclasses.Field) -> bool:
    return spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING


def _coerce(value: Any, hint: Any, key: str) -> Any:
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, options[0], key)
    expected = origin or hint
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is dict and value is None:
        return {}
    if not isinstance(value, expected) or (expected in (int, float) and isinstance(value, bool)):
        raise ConfigError(f"{key} must be {expected.__name__}, got {value!r}")
    if expected is float and math.isnan(value):
        raise ConfigError(f"{key} is NaN; give a number")
    return value


def yaml_problem(error: Exception) -> str:
    """PyYAML's complaint in one line, with the line and column where it has them."""
    problem = getattr(error, "problem", None) or " ".join(str(error).split())
    mark = getattr(error, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.1"`` → (["optim", "lr"], 0.1); the value is read as YAML (``1e-5`` as a float too)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. optim.lr=0.01")
    path, raw = text.split("=", 1)
    try:
        value = yaml.load(raw, Loader=NumberLoader)
    except yaml.YAMLError as error:
        raise ConfigError(
            f"override {text!r}: the value {raw!r} is not valid YAML ({yaml_problem(error)}); write a mapping as "
            "{key: value, ...}, a list as [a, b, ...], and put a string with such characters in quotes"
        ) from None
    return path.strip().split("."), value


def yaml_value(value: Any) -> str:
    """``value`` written so that :func:`parse_override` reads it back as the same value (``1e-07`` is a
    string to YAML, ``1.0e-07`` a float)."""
    return yaml.safe_dump(value, default_flow_style=True, width=math.inf).removesuffix("\n...\n").strip()


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {key} is not a section")
        node[keys[-1]] = value
    return data


#: the top-level section of a config file that only ``erlmr tune`` reads (search ranges); training skips it
TUNE_SECTION = "tune"


def read_config_file(path: str | Path | None) -> dict:
    """The mapping in a YAML config file ({} for no file)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} is not valid YAML: {yaml_problem(error)}") from None
    if data is None:  # an empty file
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of sections (data:, model:, method:, optim:, train:), "
            f"got {'a list' if isinstance(data, list) else 'a single value'}: {str(data)[:40]}"
        )
    return data


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (or start from defaults), apply overrides, validate."""
    data = read_config_file(path)
    data.pop(TUNE_SECTION, None)
    config = from_dict(Config, apply_overrides(data, overrides))
    validate(config)
    return config


def validate(config: Config) -> None:
    """Range checks that a type alone cannot express."""
    checks = [
        (config.optim.lr > 0, f"optim.lr must be > 0, got {config.optim.lr}"),
        (math.isfinite(config.optim.lr), f"optim.lr must be a finite number, got {config.optim.lr}"),
        (config.optim.momentum >= 0, f"optim.momentum must be >= 0, got {config.optim.momentum}"),
        (config.optim.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {config.optim.weight_decay}"),
        (config.optim.name in OPTIMIZERS, f"unknown optimizer {config.optim.name!r}; valid: {', '.join(OPTIMIZERS)}"),
        (
            config.optim.schedule in SCHEDULES,
            f"unknown schedule {config.optim.schedule!r}; valid: {', '.join(SCHEDULES)}",
        ),
        (config.optim.step_size >= 1, f"optim.step_size must be >= 1, got {config.optim.step_size}"),
        (
            config.optim.grad_clip >= 0,
            f"optim.grad_clip must be >= 0 (0 turns clipping off), got {config.optim.grad_clip}",
        ),
        (config.train.epochs >= 1, f"train.epochs must be >= 1, got {config.train.epochs}"),
        (
            0 <= config.train.seed <= MAX_SEED,
            f"train.seed must be in 0..{MAX_SEED} (numpy takes 32-bit seeds), got {config.train.seed}",
        ),
        (config.train.batch_size >= 1, f"train.batch_size must be >= 1, got {config.train.batch_size}"),
        (config.train.num_workers >= 0, f"train.num_workers must be >= 0, got {config.train.num_workers}"),
        (
            0 <= config.model.euler_dropout < 1,
            f"model.euler_dropout must be in [0, 1), got {config.model.euler_dropout}",
        ),
        (config.model.euler_dim >= 1, f"model.euler_dim must be >= 1, got {config.model.euler_dim}"),
        (0 <= config.data.val_fraction < 1, f"data.val_fraction must be in [0, 1), got {config.data.val_fraction}"),
        (
            config.data.normalize in NORMALIZE,
            f"unknown data.normalize {config.data.normalize!r}; valid: {', '.join(NORMALIZE)}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
