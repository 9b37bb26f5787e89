"""A kill-and-resume check for a method on options that tests/reliability/test_resume.py (defaults only)
does not reach: re-sampled epochs, re-initialisations, learned loss weights."""

from __future__ import annotations

import signal

import pytest

import erlmr
from erlmr.errors import TrainingInterrupted
from reliability.conftest import (
    epoch_records,
    send_signal,
    small_config,
    summary_results,
)


def train_stop_and_resume(tmp_path, at_step, monkeypatch, method: str, options: dict, stop_at: int) -> list[dict]:
    """Train ``method`` 2 epochs on 144 synthetic training samples; train it again, stopped by SIGTERM
    in step ``stop_at`` (counted from 1 over both epochs), and resume; assert both runs end alike.
    Returns the uninterrupted run's epoch records."""

    def config(run_dir):
        run = small_config(run_dir, method={"name": method, "options": options}, train={"epochs": 2})
        run["data"]["options"] = {"train_size": 160, "test_size": 64}
        return run

    full = erlmr.train(config(tmp_path / "full"))
    at_step(stop_at, send_signal(signal.SIGTERM))
    with pytest.raises(TrainingInterrupted):
        erlmr.train(config(tmp_path / "stopped"))
    monkeypatch.undo()
    resumed = erlmr.resume(tmp_path / "stopped")
    assert epoch_records(resumed.run_dir) == epoch_records(full.run_dir)
    assert summary_results(resumed.summary) == summary_results(full.summary)
    return epoch_records(full.run_dir)
