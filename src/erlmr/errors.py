"""The exceptions erlmr raises for bad input. The CLI prints their message alone, without a traceback."""


class ErlmrError(Exception):
    """Base class: a problem the user can fix, described in the message."""


class ConfigError(ErlmrError, ValueError):
    """A configuration value, name or combination that is not valid."""


class DataError(ErlmrError, ValueError):
    """Input data that is missing, malformed or inconsistent."""


class CheckpointError(ErlmrError):
    """A checkpoint that cannot be read or does not match the run."""


class TrainingDivergedError(ErlmrError):
    """Training produced a NaN or Inf loss or gradient."""
