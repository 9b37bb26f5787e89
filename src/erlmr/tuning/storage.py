"""Where a study lives: an SQLite file, any database SQLAlchemy reaches, or Optuna's journal file.

Every storage records a heartbeat for each running trial, so that a trial whose worker was killed is
marked FAIL by the next worker that looks (Optuna's ``fail_stale_trials``): relational databases with
Optuna's own heartbeat (database clock), the journal file with :class:`HeartbeatJournalStorage` (the
workers' clocks, which must agree to within the grace period).

Optuna: Akiba, Sano, Yanase, Ohta, Koyama, "Optuna: A Next-generation Hyperparameter Optimization
Framework", KDD 2019; github.com/optuna/optuna.
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MissingDependencyError
from ..extras import require

JOURNAL_PREFIX = "journal://"
#: the trial system attribute that holds a journal trial's last heartbeat (seconds since the epoch)
HEARTBEAT_KEY = "erlmr:heartbeat"
STORAGE_FORMS = "sqlite:///PATH, postgresql://USER:PASSWORD@HOST:PORT/DB (any SQLAlchemy URL) or journal:///PATH"


def import_optuna() -> Any:
    """Optuna, or a MissingDependencyError that names the extra to install."""
    optuna = require("optuna", "tuning", "erlmr tune")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / 'study.db').absolute()}"


def shown(url: str) -> str:
    """The URL with any password hidden, for messages and records."""
    if url.startswith(JOURNAL_PREFIX):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy can parse: shown as given, no parsed password in it
        return url


def open_storage(url: str, heartbeat: int) -> Any:
    """The Optuna storage at ``url`` with a heartbeat every ``heartbeat`` seconds (stale after three)."""
    optuna = import_optuna()
    if url.startswith(JOURNAL_PREFIX):
        return open_journal(optuna, url[len(JOURNAL_PREFIX) :], heartbeat)
    from sqlalchemy.exc import IntegrityError

    # SQLite waits for a busy file (another worker writing) instead of failing at once
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    with_driver(url), engine_kwargs=engine, heartbeat_interval=heartbeat, grace_period=3 * heartbeat
                )
        except IntegrityError:  # another worker created the tables at the same moment: they exist now
            time.sleep(0.5 * (attempt + 1))
        except ConfigError:
            raise
        except Exception as error:  # noqa: BLE001 - SQLAlchemy and the drivers raise many kinds; the message helps
            if "already exists" in str(error):  # SQLite's side of the same race ("table studies already exists")
                time.sleep(0.5 * (attempt + 1))
                continue
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigError(f"cannot open the study storage {shown(url)}: {reason}. Give {STORAGE_FORMS}") from None
    raise ConfigError(f"cannot open the study storage {shown(url)}: its tables could not be created; try again")


def with_driver(url: str) -> str:
    """``postgresql://`` with the PostgreSQL driver that is installed (psycopg 3 or psycopg2)."""
    if not url.startswith("postgresql://"):
        return url
    if importlib.util.find_spec("psycopg2") is not None:
        return url
    if importlib.util.find_spec("psycopg") is not None:
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    raise MissingDependencyError("a postgresql:// storage needs psycopg: pip install 'erlmr[postgres]'")


def open_journal(optuna: Any, path: str, heartbeat: int) -> Any:
    from optuna.storages.journal import JournalFileBackend

    if not path:
        raise ConfigError("journal storage needs a file: journal:///PATH, e.g. journal:///shared/tune.log")
    file = Path(path)
    if not file.parent.is_dir():
        raise ConfigError(f"cannot open the study storage journal://{path}: folder {file.parent} does not exist")
    try:
        backend = JournalFileBackend(str(file))
    except OSError as error:
        raise ConfigError(f"cannot open the study storage journal://{path}: {error.strerror}") from None
    return heartbeat_journal_class(optuna)(backend, heartbeat)


def heartbeat_journal_class(optuna: Any) -> type:
    """:class:`optuna.storages.JournalStorage` with heartbeats kept as trial system attributes."""
    from optuna.storages._heartbeat import BaseHeartbeat  # Optuna's interface for storages with heartbeats
    from optuna.trial import TrialState

    class HeartbeatJournalStorage(optuna.storages.JournalStorage, BaseHeartbeat):
        def __init__(self, backend: Any, interval: int):
            super().__init__(backend)
            self.interval = interval

        def record_heartbeat(self, trial_id: int) -> None:
            self.set_trial_system_attr(trial_id, HEARTBEAT_KEY, time.time())

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now = time.time()
            running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
            return [
                t._trial_id
                for t in running
                if HEARTBEAT_KEY in t.system_attrs and now - t.system_attrs[HEARTBEAT_KEY] > 3 * self.interval
            ]

        def get_heartbeat_interval(self) -> int:
            return self.interval

        def get_heartbeat_stale_trial_callback(self) -> None:
            return None

    return HeartbeatJournalStorage
