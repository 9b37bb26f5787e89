"""erlmr: balanced multi-modal learning with ERL-MR and the methods it competes with.

Han, Cai, Guo, Peng. "ERL-MR: Harnessing the Power of Euler Feature Representations for Balanced
Multi-modal Learning". ACM Multimedia 2024. doi:10.1145/3664647.3681215
"""
from .config import Config, load_config
from .errors import CheckpointError, ConfigError, DataError, ErlmrError, TrainingDivergedError, TrainingInterrupted
from .nn.euler import EulerOutput, EulerRepresentation
from .nn.fusion import FUSIONS, ConcatFusion, FiLMFusion, FusionOutput, GatedFusion, SumFusion
from .nn.losses import MMCLoss
from .nn.model import ModelOutput, MultiModalModel
from .nn.pareto import min_norm_weights
from .analysis.prediction import Prediction, predict
from .training.reload import LoadedRun, load_run
from .training.trainer import RunResult, resume, train

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "ConcatFusion", "Config", "ConfigError", "DataError", "ErlmrError", "EulerOutput",
    "EulerRepresentation", "FUSIONS", "FiLMFusion", "FusionOutput", "GatedFusion", "LoadedRun", "MMCLoss",
    "ModelOutput", "MultiModalModel", "Prediction", "RunResult", "SumFusion", "TrainingDivergedError",
    "TrainingInterrupted", "load_config", "load_run", "min_norm_weights", "predict", "resume", "train",
]
