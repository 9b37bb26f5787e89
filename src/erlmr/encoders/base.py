"""The encoder registry and shape-based defaults."""
from __future__ import annotations

from typing import Callable, Mapping

from torch import nn

from ..errors import ConfigError
from ..registry import Registry

EncoderFactory = Callable[..., nn.Module]
ENCODERS: Registry[EncoderFactory] = Registry("encoder", positional=("input_shape",))

DEFAULT_BY_RANK = {1: "mlp", 2: "cnn1d", 3: "cnn2d"}


def default_encoder_for(input_shape: tuple[int, ...]) -> str:
    """The encoder that suits one sample's shape: (D,) an MLP, (C, T) a 1-D CNN, (C, H, W) a 2-D CNN."""
    if len(input_shape) not in DEFAULT_BY_RANK:
        raise ConfigError(
            f"no default encoder for samples of shape {input_shape}; expected (D,), (C, T) or (C, H, W), "
            "or name an encoder in model.encoders"
        )
    return DEFAULT_BY_RANK[len(input_shape)]


def build_encoder(name: str, input_shape: tuple[int, ...], options: Mapping[str, object]) -> nn.Module:
    encoder = ENCODERS.build(name, options, input_shape)
    if not hasattr(encoder, "output_shape"):
        raise ConfigError(f"encoder {name!r} does not declare its output_shape")
    return encoder
