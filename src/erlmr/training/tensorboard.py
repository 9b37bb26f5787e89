"""Optional TensorBoard mirror of the per-epoch metrics; the run folder's metrics.jsonl stays the record."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

from ..extras import require


def scalars(record: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """Numeric leaves of a nested record as ``("val_contribution/audio", 0.31)`` pairs."""
    for key, value in record.items():
        tag = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from scalars(value, f"{tag}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield tag, float(value)


class TensorBoardLogger:
    """Writes every numeric value of each epoch record as a scalar at step = epoch.

    Constructed before the run folder exists, so that a missing package fails before training starts.
    """

    def __init__(self):
        self.writer_class = require(
            "torch.utils.tensorboard", "tensorboard", "--tensorboard (train.tensorboard)"
        ).SummaryWriter
        self.writer = None

    def open(self, log_dir: Path) -> None:
        self.writer = self.writer_class(str(log_dir))

    def log(self, record: Mapping[str, Any]) -> None:
        epoch = record["epoch"]
        for tag, value in scalars(record):
            if tag != "epoch":
                self.writer.add_scalar(tag, value, epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
