"""SIGINT and SIGTERM during training: save, then stop with a message that says how to continue."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

from ..errors import TrainingInterrupted


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
        number = self.received
        assert number is not None, "interrupted() is asked for after a signal arrived"
        name = signal.Signals(number).name
        return TrainingInterrupted(
            f"training stopped by {name} {where}; its state is saved in {run_dir / 'last.pt'}. "
            f"Continue with: erlmr train --resume {run_dir}",
            number,
        )
