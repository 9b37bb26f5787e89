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
from typing import Any, Mapping

import numpy as np
import torch
import yaml

from ..training.checkpoint import load_checkpoint
from ..config import Config, from_dict, validate
from ..data import DatasetSplits
from ..data.checks import nonfinite_rows
from ..errors import CheckpointError, ConfigError, DataError
from ..methods import Method
from ..nn.model import MultiModalModel
from ..training.runstate import check_model_fits, check_same_config
from ..training.trainer import ModelSpec, build_model_from_spec, make_method, resolve_device


@dataclass
class LoadedRun:
    """A trained model and its method in evaluation mode, with the config and names they were trained with."""

    config: Config
    model: MultiModalModel
    method: Method
    modalities: list[str]
    classes: list[str]


@dataclass
class Prediction:
    logits: torch.Tensor
    probabilities: torch.Tensor
    labels: list[str]
    modalities: list[str]


def load_run(
    run_dir: str | Path, checkpoint: str = "best.pt", device: str = "cpu", splits: DatasetSplits | None = None
) -> LoadedRun:
    """Rebuild the model and method of a run from one of its checkpoints (``best.pt`` or ``last.pt``).

    The checkpoint alone suffices: it holds the config and the data's shapes. When the folder still has
    its ``config.yaml``, a checkpoint trained with another config is refused. ``splits`` is handed to
    the method for methods that read the data when they are built.
    """
    run_dir = Path(run_dir)
    path = run_dir / checkpoint
    target = resolve_device(device)
    state = load_checkpoint(path, target)
    if "spec" not in state or "config" not in state:
        raise CheckpointError(f"checkpoint {path} lacks the config or model spec a trained run needs to be rebuilt")
    config_path = run_dir / "config.yaml"
    if config_path.is_file():
        check_same_config(path, state, from_dict(Config, yaml.safe_load(config_path.read_text())).to_dict(), str(config_path))
    config = from_dict(Config, state["config"])
    validate(config)
    spec = ModelSpec(**state["spec"])
    model = build_model_from_spec(config.model, spec).to(target)
    method = make_method(config, model, target, splits)
    check_model_fits(path, state["model"], model)
    model.load_state_dict(state["model"])
    method.load_state_dict(state["method"])
    model.eval()
    return LoadedRun(config, model, method, list(spec.modalities), list(state["classes"]))


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
        raise DataError(f"inputs name modalities {sorted(inputs)}; this run takes a non-empty subset of {run.modalities}")
    shapes = run.model.input_shapes
    tensors = {m: as_float_tensor(m, inputs[m], shapes[m]) for m in run.modalities if m in inputs}
    counts = {m: len(x) for m, x in tensors.items()}
    if len(set(counts.values())) != 1:
        raise DataError(f"modalities have different sample counts {counts}; give one row per sample in each")
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
