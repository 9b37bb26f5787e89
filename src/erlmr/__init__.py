"""erlmr: balanced multi-modal learning with ERL-MR and the methods it competes with.

Han, Cai, Guo, Peng. "ERL-MR: Harnessing the Power of Euler Feature Representations for Balanced
Multi-modal Learning". ACM Multimedia 2024. doi:10.1145/3664647.3681215
"""
from .config import Config, load_config
from .errors import CheckpointError, ConfigError, DataError, ErlmrError, TrainingDivergedError, TrainingInterrupted
from .euler import EulerOutput, EulerRepresentation
from .fusion import FUSIONS, ConcatFusion, FiLMFusion, FusionOutput, GatedFusion, SumFusion
from .losses import MMCLoss
from .model import ModelOutput, MultiModalModel
from .pareto import min_norm_weights
from .prediction import LoadedRun, Prediction, load_run, predict
from .trainer import RunResult, resume, train

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "ConcatFusion", "Config", "ConfigError", "DataError", "ErlmrError", "EulerOutput",
    "EulerRepresentation", "FUSIONS", "FiLMFusion", "FusionOutput", "GatedFusion", "LoadedRun", "MMCLoss",
    "ModelOutput", "MultiModalModel", "Prediction", "RunResult", "SumFusion", "TrainingDivergedError",
    "TrainingInterrupted", "load_config", "load_run", "min_norm_weights", "predict", "resume", "train",
]
