"""Finished run folders: find them and read them, and name what they ran."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..training.run_folder import RunFolder

#: written beside a run of a setting found by ``erlmr tune`` (``erlmr bench --tuned``): its label and origin
TUNED_MARKER = "tuned.json"
#: written beside a run of a grid method that sets config keys of its own (``erlmr[model.euler=false]``)
VARIANT_MARKER = "variant.json"
#: appended to a method's label for its tuned setting
TUNED_SUFFIX = " (tuned)"
#: written by ``erlmr tune`` in each trial's run folder; trials are not runs of a benchmark
TRIAL_MARKER = "trial.json"


@dataclass
class FinishedRun:
    path: Path
    summary: dict
    epochs: list[dict]


def with_options(name: str, options: dict | None) -> str:
    return f"{name} ({', '.join(f'{k}={v}' for k, v in sorted(options.items()))})" if options else name


def dataset_label(summary: dict) -> str:
    """The dataset name, with its ``data.options`` when any were set: runs on variants stay apart."""
    return with_options(summary["dataset"], summary.get("data_options"))


def method_label(summary: dict) -> str:
    """The method name, with its ``method.options`` when any were set, e.g. ``unimodal (modality=audio)``;
    a tuned setting's run is labelled as its ``tuned.json`` says, e.g. ``ogm_ge (tuned)``."""
    if "tuned" in summary:
        return summary["tuned"]["label"]
    if "variant" in summary:
        return summary["variant"]["label"]
    return with_options(summary["method"], summary.get("method_options"))


def read_summary(run_dir: Path) -> dict:
    """A finished run's ``summary.json``, with its ``tuned.json`` under ``"tuned"`` when it has one."""
    summary = RunFolder(Path(run_dir)).read_summary()
    for key, name in (("tuned", TUNED_MARKER), ("variant", VARIANT_MARKER)):
        marker = Path(run_dir) / name
        if marker.exists():
            summary[key] = json.loads(marker.read_text())
    return summary


def find_runs(root: str | Path, required: bool = True) -> list[FinishedRun]:
    """Every finished run (a folder holding ``summary.json``) at or below ``root``, in path order, but
    not the trials of ``erlmr tune`` (their test metrics are withheld). With ``required``, none is a
    DataError."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; give a run folder or a bench output folder")
    if (root / TRIAL_MARKER).exists() and required:
        raise DataError(
            f"{root} is a trial of 'erlmr tune': its test metrics are withheld (docs/protocol.md); report the "
            "tune folder, or train its setting with 'erlmr bench --tuned TUNE_OUT'"
        )
    paths = sorted(p.parent for p in root.rglob("summary.json") if not (p.parent / TRIAL_MARKER).exists())
    if not paths and required:
        raise DataError(f"no finished run under {root}: no summary.json found; train or bench first")
    return [FinishedRun(p, read_summary(p), RunFolder(p).epoch_records()) for p in paths]
