"""What it takes to continue a run exactly where it stopped, and to refuse a checkpoint that is not its own.

A checkpoint holds, besides the model, optimiser, scheduler and method states, the position to continue
from (epoch and step), the best validation accuracy so far, the epoch's running totals when it was
saved mid-epoch, and the torch, numpy and Python RNG states. The data order of an epoch is a pure
function of (seed, epoch) (see :func:`erlmr.training.trainer.make_loader`), so the sampler position is the step.
"""
from __future__ import annotations

import copy
import hashlib
import json
import random
import shutil
import signal
import threading
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError, TrainingInterrupted
from .lock import FolderLock

#: config keys that say where and how visibly a run happens, not what it computes: they may differ on resume
RUN_PLACEMENT_KEYS = {"train": ("quiet", "device", "num_workers", "out", "run_dir")}


def capture_rng(cuda: bool) -> dict[str, Any]:
    """The torch, numpy and Python RNG states as tensors and plain tuples, so that a checkpoint holding them
    loads with ``torch.load(weights_only=True)`` (no pickled numpy array or other object)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss),
        "python": random.getstate(),  # (version, tuple of ints, float or None)
    }
    if cuda:
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), position, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def result_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config without the keys of :data:`RUN_PLACEMENT_KEYS`: what decides the numbers a run produces."""
    kept = copy.deepcopy(dict(config))
    for section, keys in RUN_PLACEMENT_KEYS.items():
        for key in keys:
            kept.get(section, {}).pop(key, None)
    return kept


def config_fingerprint(config: Mapping[str, Any]) -> str:
    text = json.dumps(result_config(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def differences(
    saved: Mapping[str, Any], current: Mapping[str, Any], where: tuple[str, str] = ("in the checkpoint", "now"), limit: int = 5,
) -> str:
    """``"key: A in the checkpoint, B now; ..."`` for the first ``limit`` keys that differ."""
    a, b = flatten(saved), flatten(current)
    keys = sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))
    shown = "; ".join(f"{k}: {a.get(k, '<absent>')!r} {where[0]}, {b.get(k, '<absent>')!r} {where[1]}" for k in keys[:limit])
    return shown + (f"; and {len(keys) - limit} more" if len(keys) > limit else "")


def check_same_config(path: Path, checkpoint: Mapping[str, Any], config: Mapping[str, Any], source: str) -> None:
    """Raise if the checkpoint was trained with a config that would compute something else."""
    saved = checkpoint.get("config")
    if not isinstance(saved, Mapping):
        raise CheckpointError(f"checkpoint {path} records no config; it is not a checkpoint erlmr can resume or load")
    if config_fingerprint(saved) != config_fingerprint(config):
        raise CheckpointError(
            f"checkpoint {path} was written by a different configuration than {source}: "
            f"{differences(result_config(saved), result_config(config))}"
        )


def check_same_spec(path: Path, checkpoint: Mapping[str, Any], spec: Mapping[str, Any]) -> None:
    """Raise if the data the model is built for (modalities, sample shapes, encoders, classes) changed."""
    saved = checkpoint.get("spec")
    if saved is None:
        raise CheckpointError(f"checkpoint {path} records no model spec; it predates resumable checkpoints")
    if json.dumps(saved, sort_keys=True, default=list) != json.dumps(spec, sort_keys=True, default=list):
        raise CheckpointError(f"checkpoint {path} was trained on other data: {differences(saved, spec)}")


def check_model_fits(path: Path, state: Mapping[str, torch.Tensor], model: torch.nn.Module) -> None:
    """Raise, naming the parameters, if the checkpoint's weights do not fit ``model``."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = [
        f"{k} {tuple(state[k].shape)} in the checkpoint vs {tuple(v.shape)} in the model"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = [
        f"missing {missing[:3]}" if missing else "",
        f"unexpected {unexpected[:3]}" if unexpected else "",
        f"shapes differ: {'; '.join(reshaped[:3])}" if reshaped else "",
    ]
    problems = [p for p in problems if p]
    if problems:
        raise CheckpointError(f"checkpoint {path} holds weights of another model: {', '.join(problems)}")


def read_metrics(path: Path) -> list[dict]:
    """The complete JSON records of ``metrics.jsonl``; a line cut short by a crash is skipped."""
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def metrics_before(path: Path, epoch: int) -> str:
    """The text of ``metrics.jsonl`` keeping only the epoch records of epochs before ``epoch``."""
    kept = [r for r in read_metrics(path) if isinstance(r, dict) and "error" not in r and r.get("epoch", epoch) < epoch]
    return "".join(json.dumps(r) + "\n" for r in kept)


def kept_checkpoint(metrics_path: Path | None) -> str:
    """What a diverged run leaves to go back to, for its message (``metrics_path`` is None on ranks other than 0)."""
    if metrics_path is None:
        return "rank 0's run folder keeps the last good checkpoint, if one was written"
    if (metrics_path.parent / "last.pt").exists():
        return f"the last good checkpoint is kept in {metrics_path.parent / 'last.pt'}"
    return "no checkpoint was kept: it diverged before its first epoch ended, so train it again"


def check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise ConfigError(
            f"the disk of {folder} has {free / 2**20:.1f} MiB free, but this run needs about {needed / 2**20:.1f} MiB "
            "for its checkpoints (last.pt, best.pt and a temporary copy while one is written); "
            "free some space or choose another train.out"
        )


def claim_run_dir(run_dir: Path, resuming: bool) -> FolderLock:
    """Create ``run_dir`` and take its lock (one writer per run folder), then check, under the lock, that a
    new run overwrites no other: not a finished one, and not an unfinished one unless it is resuming it."""
    lock = FolderLock(run_dir, "run folder", "wait for it to finish, or choose another train.run_dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        lock.release()
        raise ConfigError(f"cannot write the run folder {run_dir}: {error.strerror}; choose a writable train.out") from None
    if (run_dir / "summary.json").exists():
        lock.release()
        raise ConfigError(f"run folder {run_dir} already holds a finished run; choose another train.run_dir")
    if not resuming and (run_dir / "last.pt").exists():
        lock.release()
        raise ConfigError(
            f"run folder {run_dir} holds an unfinished run; continue it with: erlmr train --resume {run_dir} "
            "(or choose another train.run_dir)"
        )
    return lock


class StopSignals:
    """While active, SIGINT and SIGTERM only record that the run should stop.

    The trainer looks at :attr:`received` after every step and every epoch, saves a checkpoint and
    raises :class:`~erlmr.errors.TrainingInterrupted`. A second signal interrupts at once.
    Outside the main thread, where Python cannot install handlers, signals keep their usual effect.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        self.received = None
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous = {}

    def _handle(self, number: int, frame: Any) -> None:
        if self.received is not None:
            self.__exit__()
            raise KeyboardInterrupt
        self.received = number

    def interrupted(self, run_dir: Path, where: str) -> TrainingInterrupted:
        name = signal.Signals(self.received).name
        return TrainingInterrupted(
            f"training stopped by {name} {where}; its state is saved in {run_dir / 'last.pt'}. "
            f"Continue with: erlmr train --resume {run_dir}",
            self.received,
        )
