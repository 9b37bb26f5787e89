"""Atomic writes: a crash mid-write never replaces a good file with a half-written one."""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import CheckpointError


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write through ``write(file)`` into a temporary file beside ``path``, fsync, then rename over it.

    The file gets the permissions an ordinary ``open(path, "w")`` gives (0666 less the umask), not the
    0600 of ``mkstemp``, so that colleagues sharing a results folder can read it."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, mode) as file:
            write(file)
            file.flush()
            os.chmod(temporary, 0o666 & ~current_umask())
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def current_umask() -> int:
    """The process's umask; read from /proc on Linux, since ``os.umask`` can only read it by setting it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable; skipped where folders cannot be opened (Windows)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass  # some file systems cannot sync a folder; the rename itself is still atomic
    finally:
        os.close(handle)


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda file: torch.save(state, file))


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda file: file.write(json.dumps(data, indent=2) + "\n"), mode="w")


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint at ``path``, unpickled with ``weights_only=True``: tensors and plain containers only.

    Anything else in the pickle (a class, a function such as ``os.system``) is refused before it is built,
    so a crafted checkpoint cannot run code; erlmr's checkpoints hold nothing else (see
    :func:`erlmr.training.runstate.capture_rng`)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise unsafe_or_corrupt(path, str(error)) from None
    except Exception as error:  # torch raises many types for a damaged file
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(error).__name__}: {error}); "
            "use another checkpoint of the run (best.pt or last.pt) or train again"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not an erlmr checkpoint (no model state in it)")
    return state


def unsafe_or_corrupt(path: Path, reason: str) -> CheckpointError:
    """The refusal of a pickle that ``weights_only`` loading stopped, without torch's advice to load it unsafely."""
    named = re.search(r"GLOBAL ([\w.]+)", reason)
    if named and named.group(1).startswith("numpy."):
        return CheckpointError(
            f"checkpoint {path} holds a pickled numpy array ({named.group(1)}), not only tensors and plain "
            "containers; erlmr versions before weights-only loading stored numpy's random state that way, and erlmr "
            "no longer unpickles it: evaluate the run with the erlmr version that trained it, or train again"
        )
    if named:
        return CheckpointError(
            f"checkpoint {path} holds a pickled {named.group(1)}, not only tensors and plain containers; erlmr "
            "refuses to load it, because unpickling such an object can run arbitrary code. Use a checkpoint "
            "written by erlmr, or train again"
        )
    operand = re.search(r"Unsupported operand \d+", reason)
    detail = operand.group(0).lower() if operand else reason.strip().splitlines()[0]
    return CheckpointError(
        f"checkpoint {path} is corrupt or not a torch checkpoint ({detail}); erlmr loads only tensors and plain "
        "containers from it. Use another checkpoint of the run (best.pt or last.pt) or train again"
    )
