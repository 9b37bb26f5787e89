"""What it takes to continue a run exactly where it stopped, and to refuse a checkpoint that is not its own.

A checkpoint holds, besides the model, optimiser, scheduler and method states, the position to continue
from (epoch and step), the best validation accuracy so far, the epoch's running totals when it was
saved mid-epoch, and the torch, numpy and Python RNG states. The data order of an epoch is a pure
function of (seed, epoch) (see :func:`erlmr.training.builders.make_loader`), so the sampler position is the step.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import Any, Mapping, cast

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError

#: config keys that say where and how visibly a run happens, or what it measures once trained, not what it
#: trains: they may differ on resume (and runs from before the measurement keys existed still load)
RUN_PLACEMENT_KEYS = {"train": ("quiet", "device", "num_workers", "out", "run_dir", "linear_probe", "feature_maps")}


def capture_rng(cuda: bool) -> dict[str, Any]:
    """The torch, numpy and Python RNG states as tensors and plain tuples, so that a checkpoint holding them
    loads with ``torch.load(weights_only=True)`` (no pickled numpy array or other object)."""
    kind, keys, position, has_gauss, gauss = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss),
        "python": random.getstate(),  # (version, tuple of ints, float or None)
    }
    if cuda:
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), position, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def result_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config without the keys of :data:`RUN_PLACEMENT_KEYS`: what decides the numbers a run produces."""
    kept = copy.deepcopy(dict(config))
    for section, keys in RUN_PLACEMENT_KEYS.items():
        for key in keys:
            kept.get(section, {}).pop(key, None)
    return kept


def config_fingerprint(config: Mapping[str, Any]) -> str:
    text = json.dumps(result_config(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def differences(
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    where: tuple[str, str] = ("in the checkpoint", "now"),
    limit: int = 5,
) -> str:
    """``"key: A in the checkpoint, B now; ..."`` for the first ``limit`` keys that differ."""
    a, b = flatten(saved), flatten(current)
    keys = sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))
    shown = "; ".join(
        f"{k}: {a.get(k, '<absent>')!r} {where[0]}, {b.get(k, '<absent>')!r} {where[1]}" for k in keys[:limit]
    )
    return shown + (f"; and {len(keys) - limit} more" if len(keys) > limit else "")


def check_same_config(path: Path, checkpoint: Mapping[str, Any], config: Mapping[str, Any], source: str) -> None:
    """Raise if the checkpoint was trained with a config that would compute something else."""
    saved = checkpoint.get("config")
    if not isinstance(saved, Mapping):
        raise CheckpointError(f"checkpoint {path} records no config; it is not a checkpoint erlmr can resume or load")
    if config_fingerprint(saved) != config_fingerprint(config):
        raise CheckpointError(
            f"checkpoint {path} was written by a different configuration than {source}: "
            f"{differences(result_config(saved), result_config(config))}"
        )


def check_same_spec(path: Path, checkpoint: Mapping[str, Any], spec: Mapping[str, Any]) -> None:
    """Raise if the data the model is built for (modalities, sample shapes, encoders, classes) changed."""
    saved = checkpoint.get("spec")
    if saved is None:
        raise CheckpointError(f"checkpoint {path} records no model spec; it predates resumable checkpoints")
    if json.dumps(saved, sort_keys=True, default=list) != json.dumps(spec, sort_keys=True, default=list):
        raise CheckpointError(f"checkpoint {path} was trained on other data: {differences(saved, spec)}")


def check_model_fits(path: Path, state: Mapping[str, torch.Tensor], model: torch.nn.Module) -> None:
    """Raise, naming the parameters, if the checkpoint's weights do not fit ``model``."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = [
        f"{k} {tuple(state[k].shape)} in the checkpoint vs {tuple(v.shape)} in the model"
        for k, v in expected.items()
        if k in state and isinstance(v, torch.Tensor) and tuple(getattr(state[k], "shape", ())) != tuple(v.shape)
    ]
    problems = [
        f"missing {missing[:3]}" if missing else "",
        f"unexpected {unexpected[:3]}" if unexpected else "",
        f"shapes differ: {'; '.join(reshaped[:3])}" if reshaped else "",
    ]
    problems = [p for p in problems if p]
    if problems:
        raise CheckpointError(f"checkpoint {path} holds weights of another model: {', '.join(problems)}")


def check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise ConfigError(
            f"the disk of {folder} has {free / 2**20:.1f} MiB free, but this run needs about {needed / 2**20:.1f} MiB "
            "for its checkpoints (last.pt, best.pt and a temporary copy while one is written); "
            "free some space or choose another train.out"
        )
