"""A small transformer for feature sequences, e.g. the CMU-MOSEI word, COVAREP and Facet features.

MulT (Tsai et al., ACL 2019, github.com/yaohungt/Multimodal-Transformer) and the balancing benchmarks
that reuse its features encode each modality with a few transformer layers; this is a compact
uni-modal version of that.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .base import ENCODERS


class SequenceTransformer(nn.Module):
    """(C, T) features over time → project to ``d_model``, add learned positions, encode, pool over time
    to ``positions`` → (d_model, positions)."""

    def __init__(
        self, features: int, steps: int, d_model: int, heads: int, layers: int, dropout: float, positions: int
    ):
        super().__init__()
        self.project = nn.Linear(features, d_model)
        self.position = nn.Parameter(torch.randn(steps, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, heads, 2 * d_model, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.pool = nn.AdaptiveAvgPool1d(positions)
        self.output_shape = (d_model, positions)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        encoded = self.encoder(self.project(x.transpose(1, 2)) + self.position)
        return self.pool(encoded.transpose(1, 2))


@ENCODERS.register("transformer", "transformer encoder for (C, T) feature sequences, output (d_model, positions)")
def transformer(
    input_shape: tuple[int, ...],
    d_model: int = 64,
    heads: int = 4,
    layers: int = 2,
    dropout: float = 0.1,
    positions: int = 4,
) -> nn.Module:
    if len(input_shape) != 2:
        raise ConfigError(f"encoder 'transformer' takes sequences shaped (C, T), got {tuple(input_shape)}")
    if d_model % heads:
        raise ConfigError(f"transformer d_model ({d_model}) must be divisible by heads ({heads})")
    return SequenceTransformer(input_shape[0], input_shape[1], d_model, heads, layers, dropout, positions)
