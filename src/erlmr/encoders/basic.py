"""Small encoders for vectors, sequences and images, picked by default from a sample's shape.

Their defaults all give 256 features per sample (MLP: 256; 1-D CNN: 64 channels × 4 positions; 2-D CNN:
64 channels × 2×2 positions), so that any mix of them can share the Euler representation's projection.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from ..errors import ConfigError
from ..options import Bounds
from .base import ENCODERS

#: a size (width, layer count, kernel, positions): 0 or less builds a module that cannot run
Size = Annotated[int, Bounds(ge=1)]


def _require_rank(name: str, input_shape: tuple[int, ...], rank: int, layout: str) -> None:
    if len(input_shape) != rank:
        raise ConfigError(f"encoder {name!r} takes samples shaped {layout}, got {tuple(input_shape)}")


class MLPEncoder(nn.Module):
    def __init__(self, in_features: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_features
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        self.net = nn.Sequential(*blocks)
        self.output_shape = (hidden,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@ENCODERS.register("mlp", "multi-layer perceptron for (D,) vectors")
def mlp(input_shape: tuple[int, ...], hidden: Size = 256, layers: Size = 2, dropout: float = 0.0) -> nn.Module:
    _require_rank("mlp", input_shape, 1, "(D,)")
    if not 0 <= dropout < 1:
        raise ConfigError(f"encoder 'mlp': dropout must be in [0, 1), got {dropout}")
    return MLPEncoder(input_shape[0], hidden, layers, dropout)


class ConvEncoder(nn.Module):
    """Conv-BN-ReLU blocks (pooling by 2 while the map is large enough), then adaptive pooling to a fixed
    number of positions, so that every modality can give the Euler projection the same flattened size."""

    def __init__(
        self, dims: int, in_channels: int, channels: int, layers: int, kernel: int, positions: tuple[int, ...]
    ):
        super().__init__()
        conv, norm, pool, adaptive = {
            1: (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d),
            2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d),
        }[dims]
        blocks: list[nn.Module] = []
        width = in_channels
        for layer in range(layers):
            blocks += [conv(width, channels, kernel, padding=kernel // 2), norm(channels), nn.ReLU()]
            if layer < layers - 1:
                blocks.append(pool(2, ceil_mode=True))
            width = channels
        blocks.append(adaptive(positions if dims == 2 else positions[0]))
        self.net = nn.Sequential(*blocks)
        self.output_shape = (channels, int(torch.tensor(positions).prod()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(2)


@ENCODERS.register("cnn1d", "1-D CNN for (C, T) sequences, output (channels, positions)")
def cnn1d(
    input_shape: tuple[int, ...], channels: Size = 64, layers: Size = 3, kernel: Size = 5, positions: Size = 4
) -> nn.Module:
    _require_rank("cnn1d", input_shape, 2, "(C, T)")
    return ConvEncoder(1, input_shape[0], channels, layers, kernel, (positions,))


@ENCODERS.register("cnn2d", "small 2-D CNN for (C, H, W) images or spectrograms, output (channels, positions)")
def cnn2d(
    input_shape: tuple[int, ...], channels: Size = 64, layers: Size = 3, kernel: Size = 3, positions: Size = 2
) -> nn.Module:
    _require_rank("cnn2d", input_shape, 3, "(C, H, W)")
    return ConvEncoder(2, input_shape[0], channels, layers, kernel, (positions, positions))
