"""Shared helpers of the reliability tests: a small synthetic run and ways to stop it at a chosen step."""

from __future__ import annotations

import copy
import itertools
import json
import os
from pathlib import Path

import pytest

from erlmr.training import trainer

SMALL_RUN = {
    "data": {"dataset": "synthetic", "options": {"train_size": 400, "test_size": 200}},
    "method": {"name": "erlmr"},
    "model": {"euler_dim": 32},
    "optim": {"lr": 0.1},
    "train": {"epochs": 3, "batch_size": 32, "device": "cpu", "quiet": True},
}


def small_config(run_dir: Path, **sections) -> dict:
    """The small run writing to ``run_dir``; ``sections`` update config sections, e.g. optim={"lr": 0.1}."""
    config = copy.deepcopy(SMALL_RUN)
    config["train"]["run_dir"] = str(run_dir)
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return config


TIMING_KEYS = ("epoch_time_s", "step_time_s")


def epoch_records(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock fields, which no two runs share."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines]


def summary_results(summary: dict) -> dict:
    """summary.json without its measured cost (time and memory), which no two runs share."""
    return {k: v for k, v in summary.items() if k != "cost"}


@pytest.fixture
def at_step(monkeypatch):
    """``at_step(n, action)``: call ``action(model)`` in the n-th training step of a run (counted from 1
    over all epochs), after the backward pass and before the optimiser step, whatever the method."""

    def install(n: int, action) -> None:
        steps = itertools.count(1)
        check = trainer.Trainer.gradients_finite

        def check_and_act(self):
            if next(steps) == n:
                action(self.model)
            return check(self)

        monkeypatch.setattr(trainer.Trainer, "gradients_finite", check_and_act)

    return install


def send_signal(number: int):
    return lambda model: os.kill(os.getpid(), number)
