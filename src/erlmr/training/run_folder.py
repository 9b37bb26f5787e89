"""A run folder: ``config.yaml`` (written first), ``metrics.jsonl`` (a line per epoch), ``best.pt`` and
``last.pt`` (checkpoints), ``feature_maps.npz`` (the 2-D maps of the features, written at the end unless
switched off) and, only once the run has completed, ``summary.json`` (written last).
:class:`RunFolder` is the only code that reads or writes those files.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import yaml

from ..config import Config, load_config
from ..errors import CheckpointError, ConfigError, DataError
from .checkpoint import atomic_write, load_checkpoint, save_checkpoint, write_json
from .lock import FolderLock
from .runstate import check_free_space

CONFIG, METRICS, BEST, LAST, SUMMARY = "config.yaml", "metrics.jsonl", "best.pt", "last.pt", "summary.json"
FEATURE_MAPS = "feature_maps.npz"
#: what erlmr report and erlmr bench read from a summary.json
SUMMARY_KEYS = ("method", "dataset", "seed", "modalities", "classes", "test")
TEST_KEYS = ("accuracy", "macro_f1", "modality_accuracy")
#: 2: model and method states are module state dicts (methods are nn.Modules); 1 predates that
CHECKPOINT_FORMAT = 2


class RunFolder:
    """The files of one run (see the module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def for_config(cls, config: Config) -> "RunFolder":
        """``train.run_dir``, or a new folder under ``train.out`` named after dataset, method, seed and time."""
        if config.train.run_dir:
            return cls(config.train.run_dir)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        name = f"{config.data.dataset}-{config.method.name}-seed{config.train.seed}-{stamp}"
        return cls(Path(config.train.out) / name)

    @property
    def finished(self) -> bool:
        return (self.path / SUMMARY).exists()

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    # ------------------------------------------------------------------------------------- writing
    def claim(self, needed_bytes: int, resuming: bool) -> FolderLock:
        """Create (or, resuming, reuse) the folder after checking that it has room and is writable, and take its
        lock: one writer per run folder (``with folder.claim(...):`` holds it for the run). Whether the folder
        holds a run that must not be overwritten is checked under the lock, so no other writer can race it."""
        check_free_space(_existing_ancestor(self.path), needed_bytes)
        lock = FolderLock(self.path, "run folder", "wait for it to finish, or choose another train.run_dir")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            lock.acquire()
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as error:
            lock.release()
            raise ConfigError(
                f"cannot write the run folder {self.path}: {error.strerror}; choose a writable train.out"
            ) from None
        try:
            self.check_overwrites_nothing(resuming)
        except ConfigError:
            lock.release()
            raise
        return lock

    def check_overwrites_nothing(self, resuming: bool) -> None:
        if self.finished:
            raise ConfigError(f"run folder {self.path} already holds a finished run; choose another train.run_dir")
        if not resuming and self.has(LAST):
            raise ConfigError(
                f"run folder {self.path} holds an unfinished run; continue it with: erlmr train --resume {self.path} "
                "(or choose another train.run_dir)"
            )

    def write_config(self, config: Config) -> None:
        self._write(CONFIG, lambda f: f.write(yaml.safe_dump(config.to_dict(), sort_keys=False)), mode="w")

    def start_metrics(self, before_epoch: int | None) -> None:
        """Begin ``metrics.jsonl``: empty, or (resuming) keeping the records of epochs before ``before_epoch``."""
        kept = []
        if before_epoch is not None:
            kept = [
                r for r in self.metric_records() if "error" not in r and r.get("epoch", before_epoch) < before_epoch
            ]
        self._write(METRICS, lambda f: f.write("".join(_json_line(r) for r in kept)), mode="w")

    def append_metrics(self, record: dict) -> None:
        try:
            with (self.path / METRICS).open("a") as file:
                file.write(_json_line(record))
        except OSError as error:
            raise self._write_failed(self.path / METRICS, error) from None

    def save_checkpoint(self, name: str, state: dict) -> None:
        try:
            save_checkpoint(self.path / name, state)
        except OSError as error:
            raise self._write_failed(self.path / name, error) from None

    def write_summary(self, summary: dict) -> None:
        try:
            write_json(self.path / SUMMARY, summary)
        except OSError as error:
            raise self._write_failed(self.path / SUMMARY, error) from None

    def write_feature_maps(self, arrays: dict[str, Any]) -> None:
        """``feature_maps.npz`` (see :mod:`erlmr.analysis.features`), written atomically."""
        self._write(FEATURE_MAPS, lambda f: np.savez(f, **arrays))

    def _write(self, name: str, write: Any, mode: str = "wb") -> None:
        try:
            atomic_write(self.path / name, write, mode=mode)
        except OSError as error:
            raise self._write_failed(self.path / name, error) from None

    def _write_failed(self, path: Path, error: OSError) -> CheckpointError:
        return CheckpointError(
            f"could not write {path}: {error.strerror or error}; the files already in {path.parent} are unchanged. "
            f"Free some space (or fix its permissions), then continue with: erlmr train --resume {path.parent}"
        )

    # ------------------------------------------------------------------------------------- reading
    def read_config(self, overrides: Sequence[str] = ()) -> Config:
        if not self.has(CONFIG):
            raise CheckpointError(
                f"{self.path} is not a run folder (it has no config.yaml); pass the folder of a training run"
            )
        return load_config(self.path / CONFIG, overrides)

    def metric_records(self) -> list[dict]:
        """The complete JSON records of ``metrics.jsonl``; a line cut short by a crash is skipped."""
        path = self.path / METRICS
        records = []
        for line in path.read_text().splitlines() if path.exists() else []:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def epoch_records(self) -> list[dict]:
        """The per-epoch records of a finished run (error records left out). A damaged line is refused, not
        skipped as :meth:`metric_records` skips a line cut by a crash: dropping it would shift every later
        epoch of the curves drawn from them."""
        path, records = self.path / METRICS, []
        for number, line in enumerate(path.read_text(errors="replace").splitlines() if path.exists() else [], start=1):
            try:
                record = json.loads(line) if line.strip() else {}
            except ValueError as error:
                raise _damaged_line(path, number, str(error)) from None
            if not isinstance(record, dict):
                raise _damaged_line(path, number, f"a JSON {type(record).__name__}")
            records.append(record)
        return [r for r in records if "error" not in r and "val_accuracy" in r]

    def load_checkpoint(self, name: str, device: str | torch.device = "cpu") -> dict:
        return read_checkpoint(self.path / name, device)

    def read_feature_maps(self) -> dict[str, np.ndarray] | None:
        """The arrays of ``feature_maps.npz``, or None for a run without one (switched off, or older)."""
        if not self.has(FEATURE_MAPS):
            return None
        with np.load(self.path / FEATURE_MAPS, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}

    def read_summary(self) -> dict:
        """``summary.json``, refused with the fix when it is damaged or lacks what report and bench read."""
        path = self.path / SUMMARY
        advice = f"delete it and run erlmr train --resume {self.path} to write it again"
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise DataError(f"{path} is damaged ({type(error).__name__}: {error}); {advice}") from None
        summary = summary if isinstance(summary, dict) else {}
        test = summary["test"] if isinstance(summary.get("test"), dict) else {}
        missing = [k for k in SUMMARY_KEYS if k not in summary] + [f"test.{k}" for k in TEST_KEYS if k not in test]
        if missing:
            raise DataError(f"{path} is not a summary erlmr wrote (it lacks {missing}); {advice}")
        return summary

    def check_resumable(self) -> None:
        """Raise unless the folder holds an unfinished run with a checkpoint to continue from."""
        if not self.has(CONFIG):
            raise CheckpointError(
                f"{self.path} is not a run folder (it has no config.yaml); pass the folder of a training run"
            )
        if self.finished:
            raise ConfigError(
                f"run {self.path} has already completed (it has a summary.json); there is nothing to resume"
            )
        if not self.has(LAST):
            raise CheckpointError(
                f"run {self.path} has no last.pt: it stopped before its first checkpoint, "
                "so there is nothing to resume; "
                "train it again with the same command"
            )


def read_checkpoint(path: Path, device: str | torch.device = "cpu") -> dict:
    """A checkpoint of this version of erlmr; an older format is refused with what to do instead."""
    state = load_checkpoint(path, device)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {state.get('format')!r}, this erlmr reads format {CHECKPOINT_FORMAT} "
            "(methods' states changed); evaluate it with the erlmr version that trained it, or train again"
        )
    return state


def _damaged_line(path: Path, number: int, problem: str) -> DataError:
    return DataError(
        f"{path}, line {number}, is not a JSON object ({problem}): the epoch records of the run are damaged; "
        "fix or delete that line"
    )


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _json_line(record: dict) -> str:
    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    return json.dumps(clean(record)) + "\n"
