"""One writer per folder: an exclusive lock that a run (or a bench) holds while it writes its folder.

The lock is ``fcntl.flock`` on ``FOLDER/.erlmr-lock``. The kernel drops it when the holding process exits,
however it exits (``kill -9`` and the OOM killer included), so a folder is never left locked by a dead
process and a killed run can be resumed at once. The file records the holder's PID for the message a second
writer gets, and is removed when the lock is released. Readers (``erlmr eval``) refuse a folder whose lock
is held. Where ``fcntl`` does not exist (Windows), folders are not locked.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

if sys.platform == "win32":  # no flock
    fcntl = None
else:
    import fcntl

LOCK_NAME = ".erlmr-lock"


class FolderLock:
    """``with FolderLock(folder, "run folder", "wait for it to finish or choose another train.run_dir"):``
    is refused with one line, naming the folder, the holder's PID and ``advice``, while another process holds it."""

    def __init__(self, folder: str | Path, what: str, advice: str, name: str = LOCK_NAME):
        self.folder, self.what, self.advice = Path(folder), what, advice
        self.path = self.folder / name
        self.handle: int | None = None

    def acquire(self) -> "FolderLock":
        """Take the lock or raise :class:`~erlmr.errors.CheckpointError`; OSError if the folder is unwritable."""
        if fcntl is None or self.handle is not None:
            return self
        while self.handle is None:
            handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = read_holder(handle)
                os.close(handle)
                raise self.busy(holder) from None
            if still_linked(handle, self.path):
                self.handle = handle
            else:  # the previous holder removed the file between our open and our lock: lock the new one
                os.close(handle)
        os.ftruncate(self.handle, 0)
        os.write(self.handle, f"{os.getpid()}\n".encode())
        return self

    def release(self) -> None:
        if self.handle is None:
            return
        self.path.unlink(missing_ok=True)  # while still holding it: see still_linked
        os.close(self.handle)
        self.handle = None

    def busy(self, holder: str) -> CheckpointError:
        return CheckpointError(
            f"{self.what} {self.folder} is being written by another process (PID {holder}); {self.advice}"
        )

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


def read_holder(handle: int) -> str:
    try:
        return os.pread(handle, 32, 0).decode().strip() or "unknown"
    except (OSError, UnicodeDecodeError):
        return "unknown"


def still_linked(handle: int, path: Path) -> bool:
    """Whether ``handle`` is still the file at ``path`` (a releaser unlinks the file it held)."""
    try:
        return os.fstat(handle).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def refuse_if_being_written(folder: str | Path, what: str, advice: str) -> None:
    """Raise if a process holds ``folder``'s lock: its files are still changing."""
    path = Path(folder) / LOCK_NAME
    if fcntl is None or not path.is_file():
        return
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return  # removed by its holder just now, or unreadable: nobody we could wait for
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise FolderLock(folder, what, advice).busy(read_holder(handle)) from None
    finally:
        os.close(handle)
