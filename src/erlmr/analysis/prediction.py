"""A trained run, loaded back from its folder, and prediction with all of its modalities or only some.

::

    run = erlmr.load_run("runs/my-run")                        # best.pt; the dataset is not needed
    out = erlmr.predict(run, {"audio": x_audio})              # the other modalities are absent
    out.probabilities, out.labels

Inputs are raw: a run trained with input normalisation (``data.normalize``) holds the training split's
statistics in its model and applies them, so ``predict`` on raw arrays equals ``erlmr eval``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping

import numpy as np
import torch

from ..data import load_dataset
from ..data.checks import nonfinite_rows
from ..errors import ConfigError, DataError
from ..training.lock import refuse_if_being_written
from ..training.reload import LoadedRun, load_run
from .evaluation import evaluate, imbalance_report


@dataclass
class Prediction:
    logits: torch.Tensor
    probabilities: torch.Tensor
    labels: list[str]
    modalities: list[str]


def as_float_tensor(name: str, values: Any, shape: tuple[int, ...]) -> torch.Tensor:
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if array.dtype.kind not in "fiub":
        raise DataError(f"modality {name!r} has dtype {array.dtype}; pass numeric (float) arrays")
    if array.ndim == 0 or tuple(array.shape[1:]) != tuple(shape):
        raise DataError(
            f"modality {name!r} has shape {array.shape}; this model takes (N, {', '.join(map(str, shape))})"
        )
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    bad = nonfinite_rows(tensor)
    if len(bad):
        raise DataError(f"modality {name!r} has NaN or Inf in {len(bad)} sample(s), first at index {bad[0]}")
    return tensor


def predict(run: LoadedRun | str | Path, inputs: Mapping[str, Any], batch_size: int = 256) -> Prediction:
    """Class scores for samples given as ``{modality: array (N, ...)}``; leave a modality out to predict
    without it, where the run's method allows that (the model then zero-fills its fusion input)."""
    if not isinstance(run, LoadedRun):
        run = load_run(run)
    unknown = sorted(set(inputs) - set(run.modalities))
    if unknown or not inputs:
        raise DataError(
            f"inputs name modalities {sorted(inputs)}; this run takes a non-empty subset of {run.modalities}"
        )
    shapes = run.model.input_shapes
    tensors = {m: as_float_tensor(m, inputs[m], shapes[m]) for m in run.modalities if m in inputs}
    counts = {m: len(x) for m, x in tensors.items()}
    if len(set(counts.values())) != 1:
        raise DataError(f"modalities have different sample counts {counts}; give one row per sample in each")
    if not any(counts.values()):
        raise DataError(f"the inputs hold no sample ({counts}); give at least one row")
    absent = [m for m in run.modalities if m not in tensors]
    if absent and not run.method.supports_missing_modalities:
        raise ConfigError(
            f"method {run.config.method.name!r} needs every modality to predict; {absent} missing "
            f"(this run takes {run.modalities})"
        )
    device = next(run.model.parameters()).device
    run.model.eval()
    logits = []
    with torch.no_grad():
        for start in range(0, next(iter(counts.values())), batch_size):
            batch = {m: x[start : start + batch_size].to(device) for m, x in tensors.items()}
            logits.append(run.method.predict(run.model, batch, absent).logits.cpu())
    scores = torch.cat(logits)
    return Prediction(scores, scores.softmax(1), [run.classes[i] for i in scores.argmax(1).tolist()], list(tensors))


def evaluate_run(
    run_dir: str | Path, data_root: str | None = None, drop: Collection[str] = (), device: str = "auto"
) -> dict[str, Any]:
    """Test-split metrics of a saved run (its ``best.pt``), with the modalities in ``drop`` missing.

    The data is the run's dataset as its config names it, or with ``data_root`` the test split of that
    array folder, which must have the run's modalities, classes and sample shapes. A folder that is being
    trained is refused: what it would evaluate is still changing.
    """
    refuse_if_being_written(run_dir, "run folder", "evaluate it once its training has ended")
    run = load_run(run_dir, device=device)
    data = run.config.data
    if data_root is not None:
        splits = load_dataset("arrays", data_root, run.config.train.seed, data.val_fraction, {})
    else:
        splits = load_dataset(data.dataset, data.root, run.config.train.seed, data.val_fraction, data.options)
    check_same_data(run, splits.modalities, splits.num_classes, splits.input_shapes())
    unknown = sorted(set(drop) - set(run.modalities))
    if unknown:
        raise ConfigError(f"cannot drop {unknown}: the run's modalities are {run.modalities}")
    if set(run.modalities) <= set(drop):
        raise ConfigError(f"cannot drop every modality {run.modalities}; keep at least one")
    device_of_run = next(run.model.parameters()).device
    args = (run.model, run.method, splits.test, run.config.train.batch_size, device_of_run)
    result = evaluate(*args, absent=drop)
    return {
        "run": str(run_dir),
        "data": splits.name,
        "samples": len(splits.test),
        "dropped": [m for m in run.modalities if m in drop],
        "accuracy": result["accuracy"],
        "macro_f1": result["macro_f1"],
        "modality_accuracy": result["modality_accuracy"],
        **imbalance_report(*args, absent=drop),
    }


def check_same_data(run: LoadedRun, modalities: list[str], num_classes: int, shapes: Mapping[str, tuple]) -> None:
    if list(modalities) != run.modalities:
        raise DataError(f"the run was trained on modalities {run.modalities} but the data has {modalities}")
    if num_classes != len(run.classes):
        raise DataError(f"the run was trained on {len(run.classes)} classes but the data has {num_classes}")
    expected = {m: tuple(s) for m, s in run.model.input_shapes.items()}
    if {m: tuple(s) for m, s in shapes.items()} != expected:
        raise DataError(
            f"the data's sample shapes {dict(shapes)} do not fit the model saved in {run.folder.path} ({expected}); "
            "give data with the shapes the run was trained on"
        )
