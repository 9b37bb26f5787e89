"""Everything a run is built from its config: device, model, method, optimiser, schedule, batches."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..config import Config, ModelConfig, from_dict, load_config, validate
from ..data import DatasetSplits, Split
from ..encoders import build_encoder, default_encoder_for, without_initial_weights
from ..encoders.base import encoder_output_shape
from ..errors import ConfigError
from ..methods import Method, MethodContext, build_method, method_class
from ..nn.euler import EulerRepresentation
from ..nn.fusion import FUSIONS
from ..nn.model import MultiModalModel
from ..nn.normalize import InputNormalizer
from .distributed import ShardedBatchSampler


@dataclass
class ModelSpec:
    """What building the model takes besides the config; fixed by the data and saved in every checkpoint,
    so that a trained model can be rebuilt without its dataset (:func:`erlmr.load_run`)."""

    modalities: list[str]
    input_shapes: dict[str, tuple[int, ...]]
    encoders: dict[str, str]
    num_classes: int
    euler: bool
    normalization: str = "none"  # the kind of the model's InputNormalizer, "none" for none


def as_config(config: Config | Mapping | str | Path) -> Config:
    """A validated :class:`Config` from a Config, a mapping or the path of a YAML file."""
    if isinstance(config, Config):
        validate(config)
        return config
    if isinstance(config, (str, Path)):
        return load_config(config)
    parsed = from_dict(Config, config)
    validate(parsed)
    return parsed


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {name!r} but no CUDA device is available; use 'cpu' or 'auto'")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device {name!r} is not a device; use 'auto', 'cpu' or 'cuda[:N]'") from None


def model_spec(config: Config, splits: DatasetSplits) -> ModelSpec:
    """The spec of the model ``config`` trains on ``splits``: encoders named or chosen by sample shape."""
    model = config.model
    shapes = splits.input_shapes()
    unknown = sorted((set(model.encoders) | set(model.encoder_options)) - set(splits.modalities))
    if unknown:
        raise ConfigError(f"model.encoders names unknown modalities {unknown}; this dataset has {splits.modalities}")
    names = {
        m: model.encoders.get(m) or splits.default_encoders.get(m) or default_encoder_for(shapes[m])
        for m in splits.modalities
    }
    use_euler = method_class(config.method.name).uses_euler if model.euler is None else model.euler
    normalization = splits.input_normalization(config.data.normalize)
    return ModelSpec(list(splits.modalities), shapes, names, splits.num_classes, use_euler, normalization)


def build_model(config: ModelConfig, spec: ModelSpec, initial_weights: bool = True) -> MultiModalModel:
    """The model of ``config`` for data of ``spec``. Without ``initial_weights`` the encoders skip the
    options that only load starting weights (a pretrained file): for a model restored from a checkpoint,
    which holds every weight, so that it loads where that file is absent."""
    shapes = spec.input_shapes
    options = config.encoder_options if initial_weights else without_initial_weights(config.encoder_options)
    encoders = {m: build_encoder(spec.encoders[m], shapes[m], options.get(m, {})) for m in spec.modalities}
    normalizer = None if spec.normalization == "none" else InputNormalizer(shapes, spec.normalization)
    return assemble_model(config, spec.modalities, encoders, spec.num_classes, spec.euler, shapes, normalizer)


def assemble_model(
    config: ModelConfig,
    modalities: Sequence[str],
    encoders: Mapping[str, nn.Module],
    num_classes: int,
    euler: bool,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    normalizer: InputNormalizer | None = None,
) -> MultiModalModel:
    """The model around ``encoders`` (erlmr's or a user's, each with a checked ``output_shape``:
    :func:`erlmr.encoders.base.check_encoder`): the Euler representation when ``euler``, then the
    configured fusion head."""
    representation = None
    if euler:
        representation = EulerRepresentation(
            [tuple(encoder_output_shape(encoders[m])) for m in modalities],
            config.euler_dim,
            config.euler_dropout,
            config.shared_projection,
        )
        widths = [2 * config.euler_dim] * len(modalities)
    else:
        widths = [encoder_output_shape(encoders[m])[0] for m in modalities]
    head = FUSIONS.build(config.fusion, config.fusion_options, widths, num_classes)
    return MultiModalModel(modalities, encoders, head, representation, input_shapes, normalizer)


def build_training_method(
    config: Config, model: MultiModalModel, device: torch.device, splits: DatasetSplits | None
) -> Method:
    """The configured method for ``model``, on ``device``; ``splits`` for methods that read the data."""
    context = MethodContext(
        modalities=model.modalities,
        num_classes=model.head.num_classes,
        batch_size=config.train.batch_size,
        device=device,
        splits=splits,
        epochs=config.train.epochs,
    )
    return build_method(config.method.name, config.method.options, model, context).to(device)


def trainable_parameters(*modules: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters of the model and the method, each once."""
    seen: dict[int, nn.Parameter] = {}
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                seen.setdefault(id(p), p)
    return list(seen.values())


def build_optimizer(config: Config, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    o = config.optim
    params = list(params)
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    optimizer = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
    if config.train.cuda_graphs:  # its step count on the device, so that a CUDA graph can hold the update
        return optimizer(params, lr=o.lr, weight_decay=o.weight_decay, capturable=True)
    return optimizer(params, lr=o.lr, weight_decay=o.weight_decay)


def build_scheduler(config: Config, optimizer: torch.optim.Optimizer) -> Any:
    o = config.optim
    if o.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, o.step_size, o.gamma)
    if o.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.train.epochs)
    return None


def collate_batch(batch: Any) -> Any:
    """Batches come whole from ``Split.__getitems__``; nothing is left to collate."""
    return batch


class IndexedSplit(Dataset):
    """A split whose batches also carry the indices of their samples in the split."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitems__(self, indices: Sequence[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        inputs, labels = self.split.__getitems__(indices)
        return inputs, labels, torch.as_tensor(indices, dtype=torch.long)


def make_loader(
    split: Split,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int,
    pin: bool,
    skip_batches: int = 0,
    rank: int = 0,
    world_size: int = 1,
    samples: torch.Tensor | None = None,
    with_indices: bool = False,
) -> DataLoader:
    """Batches in an order that depends on ``seed`` alone (not on the global RNG, which it leaves
    untouched), so that a resumed epoch sees the same batches; the first ``skip_batches`` are left out.
    Each batch is gathered from the in-memory split in one indexing operation; ``batch_size`` is the
    global batch, of which this rank gets its share (see :class:`ShardedBatchSampler`).

    ``samples`` (indices into the split, repeats allowed) replaces the split's samples for this pass, as
    a method that re-samples its training data asks (:meth:`erlmr.methods.base.Method.epoch_samples`);
    ``with_indices`` adds each batch's indices in the split as a third element."""
    count = len(split) if samples is None else len(samples)
    batches: Iterable = ShardedBatchSampler(count, batch_size, shuffle, seed, rank, world_size)
    if samples is not None:
        batches = [samples[positions] for positions in batches]
    if skip_batches:
        batches = list(batches)[skip_batches:]
    # A Split is a map-style dataset without deriving from Dataset (DataLoader reads its __len__ and __getitems__).
    return DataLoader(
        IndexedSplit(split) if with_indices else cast(Dataset, split),
        batch_sampler=batches,
        collate_fn=collate_batch,
        num_workers=num_workers,
        pin_memory=pin,
        generator=torch.Generator().manual_seed(seed),
    )


def to_device(inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, device: torch.device):
    non_blocking = device.type == "cuda"
    return {m: x.to(device, non_blocking=non_blocking) for m, x in inputs.items()}, labels.to(
        device, non_blocking=non_blocking
    )
