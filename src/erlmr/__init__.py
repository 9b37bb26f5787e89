"""erlmr: balanced multi-modal learning with ERL-MR and the methods it competes with.

Han, Cai, Guo, Peng. "ERL-MR: Harnessing the Power of Euler Feature Representations for Balanced
Multi-modal Learning". ACM Multimedia 2024. doi:10.1145/3664647.3681215

The drop-in pieces (:mod:`erlmr.nn`) and the exceptions are imported with the package; the trainer,
the run loader and the config are imported on first use (``erlmr.train``), so that a project that only
wants ERL-MR's parts in its own loop imports neither the trainer nor the data loaders.
"""

from importlib import import_module

from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    ErlmrError,
    MissingDependencyError,
    TrainingDivergedError,
    TrainingInterrupted,
)
from .nn.balance import balanced_backward
from .nn.euler import EulerOutput, EulerRepresentation
from .nn.fusion import FUSIONS, ConcatFusion, FiLMFusion, FusionOutput, GatedFusion, SumFusion
from .nn.losses import MMCLoss
from .nn.model import ModelOutput, MultiModalModel
from .nn.pareto import min_norm_weights

__version__ = "0.2.0.dev0"

# Public name -> the module that defines it, imported when the name is first looked up.
LAZY = {
    "Config": ".config",
    "load_config": ".config",
    "LoadedRun": ".training.reload",
    "Prediction": ".analysis.prediction",
    "load_run": ".training.reload",
    "predict": ".analysis.prediction",
    "RunResult": ".training.trainer",
    "resume": ".training.trainer",
    "train": ".training.trainer",
    "diagnose": ".analysis.diagnose",
    "PositionalModel": ".analysis.diagnose",
}

# Subpackages reachable as attributes after a plain `import erlmr` (erlmr.data.load_dataset), as before.
SUBMODULES = ("analysis", "cli", "config", "data", "encoders", "methods", "training")


def __getattr__(name: str):
    if name in SUBMODULES:
        return import_module(f".{name}", __name__)
    if name not in LAZY:
        raise AttributeError(f"module 'erlmr' has no attribute {name!r}")
    value = getattr(import_module(LAZY[name], __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(LAZY) | set(SUBMODULES))


__all__ = [
    "CheckpointError",
    "ConcatFusion",
    "Config",
    "ConfigError",
    "DataError",
    "ErlmrError",
    "EulerOutput",
    "EulerRepresentation",
    "FUSIONS",
    "FiLMFusion",
    "FusionOutput",
    "GatedFusion",
    "LoadedRun",
    "MMCLoss",
    "MissingDependencyError",
    "ModelOutput",
    "MultiModalModel",
    "PositionalModel",
    "Prediction",
    "RunResult",
    "SumFusion",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "balanced_backward",
    "diagnose",
    "load_config",
    "load_run",
    "min_norm_weights",
    "predict",
    "resume",
    "train",
]
