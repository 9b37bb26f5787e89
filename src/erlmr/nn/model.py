"""A multi-modal classifier: one encoder per modality, an optional Euler representation, a fusion head."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Collection, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..errors import DataError
from .euler import EulerRepresentation, join_parts, phase_of
from .fusion import FusionHead
from .normalize import InputNormalizer


@dataclass
class ModelOutput:
    """Everything one forward pass produces, keyed by modality where per modality."""

    logits: torch.Tensor
    modality_logits: dict[str, torch.Tensor]
    features: dict[str, torch.Tensor]
    encoded: dict[str, torch.Tensor]
    phases: dict[str, torch.Tensor] | None = None


def pool_positions(encoded: torch.Tensor) -> torch.Tensor:
    """An encoder output averaged over its positions: ``(B, C, L...)`` → ``(B, C)``; ``(B, D)`` as it is."""
    return encoded.flatten(2).mean(2) if encoded.dim() > 2 else encoded


class MultiModalModel(nn.Module):
    """Encoders → (Euler representation | average over positions) → fusion head.

    Without the Euler representation an encoder's feature map ``(B, C, L)`` is averaged over positions
    into ``(B, C)``. A modality left out of the inputs (or named in ``absent``) is treated as missing:
    its fusion-head input is all zeros and its encoder does not run. With a ``normalizer``
    (:class:`~erlmr.nn.normalize.InputNormalizer`) the model takes raw inputs and normalises them first.
    """

    def __init__(
        self,
        modalities: Sequence[str],
        encoders: Mapping[str, nn.Module],
        head: FusionHead,
        euler: EulerRepresentation | None = None,
        input_shapes: Mapping[str, tuple[int, ...]] | None = None,
        normalizer: InputNormalizer | None = None,
    ):
        super().__init__()
        self.normalizer = normalizer
        self.modalities = list(modalities)
        self.encoders = nn.ModuleDict({m: encoders[m] for m in self.modalities})
        self.euler = euler
        self.head = head
        self.input_shapes = dict(input_shapes or {})
        self._encoding_cache: dict | None = None

    def forward(
        self, inputs: Mapping[str, torch.Tensor], absent: Collection[str] = (), head: FusionHead | None = None
    ) -> ModelOutput:
        """Encode the present modalities and fuse them with ``head`` (default: the model's own).

        With every modality absent the head gets zeros for all of them: a constant prediction, the
        value of the empty coalition in the imbalance metrics.
        """
        encoded, features = self.fusion_inputs(inputs, absent)
        return self.fuse(encoded, features, head)

    def fusion_inputs(
        self, inputs: Mapping[str, torch.Tensor], absent: Collection[str] = ()
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The first half of :meth:`forward`: the encoders' outputs of the present modalities and every
        modality's fusion-head input (zeros for a missing one)."""
        encoded, batch = self.encode(inputs, absent)
        return encoded, self.represent(encoded, batch)

    def fuse(
        self, encoded: Mapping[str, torch.Tensor], features: Mapping[str, torch.Tensor], head: FusionHead | None = None
    ) -> ModelOutput:
        """The second half of :meth:`forward`, a function of the fusion-head inputs alone: the phases of
        the present modalities (with the Euler representation) and the head's logits. Split there, a
        compiled model keeps the gradients with respect to the features (:mod:`erlmr.training.acceleration`)."""
        phases = None if self.euler is None else {m: phase_of(features[m]) for m in encoded}
        fused = (head or self.head)([features[m] for m in self.modalities])
        return ModelOutput(
            logits=fused.logits,
            modality_logits=dict(zip(self.modalities, fused.modality_logits)),
            features=dict(features),
            encoded=dict(encoded),
            phases=phases,
        )

    def encode(
        self, inputs: Mapping[str, torch.Tensor], absent: Collection[str] = ()
    ) -> tuple[dict[str, torch.Tensor], int]:
        """Every present modality's encoder output (inputs checked, normalised first, reused inside
        :meth:`reusing_encodings`) and the batch size: the first part of :meth:`forward`, for a method
        that transforms encoder outputs before :meth:`represent` and the head."""
        given = [m for m in self.modalities if m in inputs]
        if not given:
            raise DataError(f"no modality given; this model takes {self.modalities}")
        batch = self._check_inputs(inputs, given)
        return {m: self._encode(m, inputs[m]) for m in given if m not in absent}, batch

    def _encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        if self._encoding_cache is None:
            return self._encode_now(modality, x)
        key = (modality, x.data_ptr(), tuple(x.shape))  # the caller's raw input, alive for the whole context
        if key not in self._encoding_cache:
            self._encoding_cache[key] = self._encode_now(modality, x)
        return self._encoding_cache[key]

    def _encode_now(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """The encoder's output for raw input ``x``, normalised first when the model has a normalizer."""
        if self.normalizer is not None:
            x = self.normalizer({modality: x})[modality]
        return self.encoders[modality](x)

    @contextmanager
    def reusing_encodings(self) -> Iterator[None]:
        """Within this context each encoder runs once per input tensor: later forward passes on the same
        inputs (other subsets of modalities, say) reuse its output. For evaluation without gradients."""
        self._encoding_cache = {}
        try:
            yield
        finally:
            self._encoding_cache = None

    def represent(self, encoded: Mapping[str, torch.Tensor], batch: int) -> dict[str, torch.Tensor]:
        """Fusion-head inputs: the Euler features (or the maps averaged over positions), zeros for missing
        modalities."""
        if self.euler is None or not encoded:
            features = {m: pool_positions(x) for m, x in encoded.items()}
        else:
            reference = next(iter(encoded.values()))
            maps = [
                encoded[m] if m in encoded else reference.new_zeros(batch, *self.euler.in_shapes[i])
                for i, m in enumerate(self.modalities)
            ]
            joined = join_parts(*self.euler.projected_parts(maps))
            features = {m: f for m, f in zip(self.modalities, joined) if m in encoded}
        present = next(iter(features.values()), None)
        reference = next(self.head.parameters()) if present is None else present
        widths = self.head.in_features
        full = {
            m: features[m] if m in features else reference.new_zeros(batch, widths[i])
            for i, m in enumerate(self.modalities)
        }
        return full

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every loss of a multi-task step shares: encoders and the Euler representation."""
        shared = list(self.encoders.parameters())
        if self.euler is not None:
            shared += list(self.euler.parameters())
        return shared

    def _check_inputs(self, inputs: Mapping[str, torch.Tensor], present: Sequence[str]) -> int:
        unknown = sorted(set(inputs) - set(self.modalities))
        if unknown:
            raise DataError(f"unknown modality {unknown}; this model takes {self.modalities}")
        sizes = {m: len(inputs[m]) for m in present}
        if len(set(sizes.values())) != 1:
            raise DataError(f"modalities have different batch sizes: {sizes}")
        for m in present:
            x = inputs[m]
            expected = self.input_shapes.get(m)
            if expected is not None and tuple(x.shape[1:]) != tuple(expected):
                raise DataError(
                    f"modality {m!r}: expected samples of shape {tuple(expected)}, got batch {tuple(x.shape)}"
                )
            if not x.is_floating_point():
                raise DataError(f"modality {m!r}: expected a floating-point tensor, got {x.dtype}")
        return next(iter(sizes.values()))
