"""The one way to load a trained run back: model and method rebuilt from a checkpoint, weights checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..config import Config, from_dict, validate
from ..data import DatasetSplits
from ..errors import CheckpointError
from ..methods import Method
from ..nn.model import MultiModalModel
from .builders import ModelSpec, build_model, build_training_method, resolve_device
from .run_folder import BEST, CONFIG, RunFolder, read_checkpoint
from .runstate import check_model_fits, check_same_config


@dataclass
class LoadedRun:
    """A trained model and its method in evaluation mode, with the config and names they were trained with."""

    config: Config
    model: MultiModalModel
    method: Method
    modalities: list[str]
    classes: list[str]
    folder: RunFolder


def load_run(
    run_dir: str | Path, checkpoint: str = BEST, device: str = "cpu", splits: DatasetSplits | None = None
) -> LoadedRun:
    """Rebuild the model and method of a run from one of its checkpoints (``best.pt`` or ``last.pt``).

    The checkpoint alone suffices: it holds the config and the data's shapes. When the folder still has
    its ``config.yaml``, a checkpoint trained with another config is refused (an edited config.yaml
    included). ``splits`` is handed to the method for methods that read the data.
    """
    folder = RunFolder(run_dir)
    path = folder.path / checkpoint
    if not folder.has(CONFIG) and not any(folder.path.glob("*.pt")):
        raise CheckpointError(
            f"{folder.path} is not a run folder (it has no config.yaml and no checkpoint); give the folder "
            "'erlmr train' or 'erlmr bench' wrote"
        )
    target = resolve_device(device)
    state = read_checkpoint(path, target)
    if "spec" not in state or "config" not in state:
        raise CheckpointError(f"checkpoint {path} lacks the config or model spec a trained run needs to be rebuilt")
    if folder.has(CONFIG):
        check_same_config(path, state, folder.read_config().to_dict(), str(folder.path / CONFIG))
    config = from_dict(Config, state["config"], where=f"the config saved in {path}")
    validate(config)
    model = build_model(config.model, ModelSpec(**state["spec"]), initial_weights=False).to(target)
    method = build_training_method(config, model, target, splits)
    restore_weights(path, state, model, method)
    model.eval()
    return LoadedRun(config, model, method, list(state["spec"]["modalities"]), list(state["classes"]), folder)


def restore_weights(path: Path, state: Mapping[str, Any], model: MultiModalModel, method: Method) -> None:
    """Load a checkpoint's model and method states, refusing (naming the tensors) ones that do not fit."""
    check_model_fits(path, state["model"], model)
    check_model_fits(path, state["method"], method)
    model.load_state_dict(state["model"])
    method.load_state_dict(state["method"])
