"""Finished run folders: find them and read them, and name what they ran."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..training.run_folder import RunFolder


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
    """The method name, with its ``method.options`` when any were set, e.g. ``unimodal (modality=audio)``."""
    return with_options(summary["method"], summary.get("method_options"))


def find_runs(root: str | Path) -> list[FinishedRun]:
    """Every finished run (a folder holding ``summary.json``) at or below ``root``, in path order."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; give a run folder or a bench output folder")
    paths = sorted(p.parent for p in root.rglob("summary.json"))
    if not paths:
        raise DataError(f"no finished run under {root}: no summary.json found; train or bench first")
    folders = [RunFolder(p) for p in paths]
    return [FinishedRun(f.path, f.read_summary(), f.epoch_records()) for f in folders]
