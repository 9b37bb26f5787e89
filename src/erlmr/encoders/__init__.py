"""Encoder registry and the encoders erlmr ships. Every module here is imported.

An encoder factory is registered in :data:`ENCODERS` and called as ``factory(input_shape, **options)``
with the shape of one sample. It returns an ``nn.Module`` with an ``output_shape`` attribute: ``(C, L)``
for a feature map (channels × positions, what the Euler representation consumes) or ``(D,)`` for a
vector.
"""

from ..plugins import import_submodules
from .base import ENCODERS, build_encoder, default_encoder_for, without_initial_weights

import_submodules(__name__, __path__)

__all__ = ["ENCODERS", "build_encoder", "default_encoder_for", "without_initial_weights"]
