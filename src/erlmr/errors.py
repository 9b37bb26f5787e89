"""The exceptions erlmr raises for bad input. The CLI prints their message alone, without a traceback."""


class ErlmrError(Exception):
    """Base class: a problem the user can fix, described in the message."""


class ConfigError(ErlmrError, ValueError):
    """A configuration value, name or combination that is not valid."""


class DataError(ErlmrError, ValueError):
    """Input data that is missing, malformed or inconsistent."""


class MissingDependencyError(ErlmrError, ImportError):
    """An optional package a feature needs is not installed; the message names the pip extra that brings it."""


class CheckpointError(ErlmrError):
    """A checkpoint or run folder that cannot be read or written, or that does not match the run."""


class TrainingDivergedError(ErlmrError):
    """Training produced a NaN or Inf loss or gradient."""


class TrialPruned(ErlmrError):
    """Raised by a ``train(config, on_epoch=...)`` callback to stop a run after an epoch (``erlmr tune``'s
    pruner); the run folder keeps that epoch's record and checkpoints, and gets no summary."""


class TrainingInterrupted(ErlmrError):
    """SIGINT or SIGTERM stopped training after a checkpoint was saved; the run can be resumed."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = signal_number
