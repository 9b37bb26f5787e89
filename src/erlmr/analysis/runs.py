"""Finished run folders: find and read them, and rebuild a run's model to evaluate it again."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection

from ..training.checkpoint import load_checkpoint
from ..config import load_config
from ..errors import CheckpointError, ConfigError, DataError
from .evaluation import imbalance_report
from ..training.trainer import Trainer, evaluate


#: written beside a run of a setting found by ``erlmr tune`` (``erlmr bench --tuned``): its label and origin
TUNED_MARKER = "tuned.json"
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
    return with_options(summary["method"], summary.get("method_options"))


def read_summary(run_dir: Path) -> dict:
    """A finished run's ``summary.json``, with its ``tuned.json`` under ``"tuned"`` when it has one."""
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    marker = Path(run_dir) / TUNED_MARKER
    if marker.exists():
        summary["tuned"] = json.loads(marker.read_text())
    return summary


def read_epochs(run_dir: Path) -> list[dict]:
    """The per-epoch records of ``metrics.jsonl`` (error records left out)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if "error" not in r and "val_accuracy" in r]


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
    return [FinishedRun(p, read_summary(p), read_epochs(p)) for p in paths]


def load_trained(run_dir: str | Path, data_root: str | None = None, device: str = "auto") -> Trainer:
    """A :class:`Trainer` for the run's config with the weights of its ``best.pt``.

    With ``data_root``, the data comes from that array folder instead; it must have the run's
    modalities, number of classes and sample shapes.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise CheckpointError(f"{run_dir} is not a run folder (no config.yaml); give the folder 'erlmr train' wrote")
    overrides = [f"train.device={device}", "train.tensorboard=false"]
    if data_root is not None:
        overrides += ["data.dataset=arrays", f"data.root={json.dumps(str(data_root))}", "data.options={}"]
    trainer = Trainer(load_config(config_path, overrides))
    state = load_checkpoint(run_dir / "best.pt", trainer.device)
    modalities, classes = state.get("modalities"), state.get("classes")
    if modalities is not None and list(modalities) != trainer.splits.modalities:
        raise DataError(f"the run was trained on modalities {modalities} but the data has {trainer.splits.modalities}")
    if classes is not None and len(classes) != trainer.splits.num_classes:
        raise DataError(f"the run was trained on {len(classes)} classes but the data has {trainer.splits.num_classes}")
    try:
        trainer.model.load_state_dict(state["model"])
    except RuntimeError:
        raise DataError(
            f"the data's sample shapes {trainer.splits.input_shapes()} do not fit the model saved in {run_dir}; "
            "give data with the shapes the run was trained on"
        ) from None
    trainer.method.load_state_dict(state["method"])
    return trainer


def evaluate_run(
    run_dir: str | Path, data_root: str | None = None, drop: Collection[str] = (), device: str = "auto"
) -> dict[str, Any]:
    """Test-split metrics of a saved run, with the modalities in ``drop`` missing (zeroed)."""
    trainer = load_trained(run_dir, data_root, device)
    modalities = trainer.splits.modalities
    unknown = sorted(set(drop) - set(modalities))
    if unknown:
        raise ConfigError(f"cannot drop {unknown}: the run's modalities are {modalities}")
    if set(modalities) <= set(drop):
        raise ConfigError(f"cannot drop every modality {modalities}; keep at least one")
    batch_size = trainer.config.train.batch_size
    args = (trainer.model, trainer.method, trainer.splits.test, batch_size, trainer.device)
    result = evaluate(*args, absent=drop)
    return {
        "run": str(run_dir),
        "data": trainer.splits.name,
        "samples": len(trainer.splits.test),
        "dropped": [m for m in modalities if m in drop],
        "accuracy": result["accuracy"],
        "macro_f1": result["macro_f1"],
        "modality_accuracy": result["modality_accuracy"],
        **imbalance_report(*args, absent=drop),
    }
