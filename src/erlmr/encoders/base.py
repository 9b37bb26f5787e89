"""The encoder registry and shape-based defaults."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence, cast

from torch import nn

from ..errors import ConfigError
from ..registry import Registry

EncoderFactory = Callable[..., nn.Module]
ENCODERS: Registry[EncoderFactory] = Registry("encoder", positional=("input_shape",))

DEFAULT_BY_RANK = {1: "mlp", 2: "cnn1d", 3: "cnn2d"}
# Encoder options that only set the initial weights (a file to load them from). A model restored from a
# checkpoint is built without them, so that a trained run loads where that file is absent.
INITIAL_WEIGHT_OPTIONS = ("pretrained",)


def default_encoder_for(input_shape: tuple[int, ...]) -> str:
    """The encoder that suits one sample's shape: (D,) an MLP, (C, T) a 1-D CNN, (C, H, W) a 2-D CNN."""
    if len(input_shape) not in DEFAULT_BY_RANK:
        raise ConfigError(
            f"no default encoder for samples of shape {input_shape}; expected (D,), (C, T) or (C, H, W), "
            "or name an encoder in model.encoders"
        )
    return DEFAULT_BY_RANK[len(input_shape)]


def build_encoder(name: str, input_shape: tuple[int, ...], options: Mapping[str, object]) -> nn.Module:
    """Build encoder ``name`` (a registered name, a plug-in or a ``module:Class`` path) for one sample's shape.

    Any factory is called as ``factory(input_shape, **options)`` and must return an ``nn.Module`` with an
    ``output_shape``: ``(C, L)`` for a feature map, ``(D,)`` for a vector.
    """
    return check_encoder(ENCODERS.build(name, options, input_shape), f"encoder {name!r}")


def is_output_shape(shape: object) -> bool:
    """True for ``(C, L)`` or ``(D,)`` of positive ints."""
    if not isinstance(shape, (tuple, list)) or len(shape) not in (1, 2):
        return False
    return all(isinstance(n, int) and n > 0 for n in shape)


def check_encoder(encoder: object, what: str) -> nn.Module:
    """``encoder`` itself, if it is an ``nn.Module`` with an ``output_shape`` of (C, L) or (D,)."""
    if not isinstance(encoder, nn.Module):
        raise ConfigError(f"{what} is a {type(encoder).__name__}, not a torch.nn.Module")
    shape = getattr(encoder, "output_shape", None)
    if not is_output_shape(shape):
        raise ConfigError(
            f"{what} ({type(encoder).__name__}) must set output_shape to the shape of one sample's "
            f"output, (C, L) for a feature map or (D,) for a vector; it has {shape!r}"
        )
    return encoder


def encoder_output_shape(encoder: nn.Module) -> Sequence[int]:
    """The ``output_shape`` of an encoder that passed :func:`check_encoder` (``nn.Module`` types any
    attribute it does not know as a tensor or a module)."""
    return cast("Sequence[int]", encoder.output_shape)


def without_initial_weights(encoder_options: Mapping[str, Mapping[str, object]]) -> dict[str, dict[str, object]]:
    """``model.encoder_options`` less the options in :data:`INITIAL_WEIGHT_OPTIONS`, for a model whose
    weights come from a checkpoint."""
    return {
        m: {k: v for k, v in options.items() if k not in INITIAL_WEIGHT_OPTIONS}
        for m, options in encoder_options.items()
    }
