"""The Euler feature representation of ERL-MR.

Han, Cai, Guo, Peng. "ERL-MR: Harnessing the Power of Euler Feature Representations for Balanced
Multi-modal Learning". ACM Multimedia 2024. doi:10.1145/3664647.3681215
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError, DataError


@dataclass
class EulerOutput:
    """Per modality (in input order): the feature [real ‖ imag] and the phase atan2(imag, real)."""

    features: list[torch.Tensor]
    phases: list[torch.Tensor]
    real: list[torch.Tensor]
    imag: list[torch.Tensor]


def phase_of(feature: torch.Tensor) -> torch.Tensor:
    """The phase atan2(imag, real) of a feature [real ‖ imag]. It is read back from the joined feature so
    that gradients with respect to the features (the "features" Pareto mode) see the phase term as well
    as the head."""
    real, imag = feature.chunk(2, dim=1)
    return torch.atan2(imag, real)


def join_parts(real: Sequence[torch.Tensor], imag: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per modality the feature [real ‖ imag] from the projected parts."""
    return [torch.cat([r, i], dim=1) for r, i in zip(real, imag)]


class EulerRepresentation(nn.Module):
    """Map each modality's feature map to complex space with Euler's formula.

    For a feature map ``x`` of shape ``(B, C, L)`` (or a vector ``(B, D)``, where every feature is its
    own channel) the representation is ``λ·cos x + i·λ·sin x`` with a learnable magnitude ``λ`` per
    channel and modality, initialised to 1. Both parts are flattened, passed through dropout and one
    linear projection shared by all modalities and both parts, then ReLU. The phase is
    ``θ = atan2(imag, real)``; the modality's feature is ``[real ‖ imag]``.

    Args:
        in_shapes: per modality, the shape of one sample's feature map, ``(C, L)`` or ``(D,)``.
        out_features: width of the projection (each of real and imag has this many features).
        dropout: dropout probability applied to both parts before the projection.
        shared_projection: one projection for all modalities, as the paper does. It needs every
            modality to flatten to the same size; ``False`` gives each modality its own projection.
    """

    def __init__(
        self,
        in_shapes: Sequence[Sequence[int]],
        out_features: int,
        dropout: float = 0.5,
        shared_projection: bool = True,
    ):
        super().__init__()
        if len(in_shapes) < 1:
            raise ConfigError("EulerRepresentation needs the feature shape of at least one modality")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.in_shapes = [tuple(int(s) for s in shape) for shape in in_shapes]
        for shape in self.in_shapes:
            if len(shape) not in (1, 2) or min(shape) < 1:
                raise ConfigError(f"feature shapes must be (C, L) or (D,), got {shape}")
        flat_sizes = [int(torch.tensor(shape).prod()) for shape in self.in_shapes]
        if shared_projection and len(set(flat_sizes)) > 1:
            raise ConfigError(
                f"the shared projection needs every modality to flatten to the same size, got {flat_sizes} "
                f"from shapes {self.in_shapes}; make the encoders' outputs match, or pass "
                "shared_projection=False (model.shared_projection: false) for one projection per modality"
            )
        self.shared_projection = shared_projection
        self.out_features = out_features
        self.magnitudes = nn.ParameterList(nn.Parameter(torch.ones(shape[0])) for shape in self.in_shapes)
        self.dropout = nn.Dropout(dropout)
        if shared_projection:
            self.projection = nn.Linear(flat_sizes[0], out_features)
        else:
            self.projections = nn.ModuleList(nn.Linear(n, out_features) for n in flat_sizes)

    def complex_parts(self, features: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The Euler map before dropout and projection: per modality ``(λ·cos x, λ·sin x)``, flattened."""
        self._check_inputs(features)
        real, imag = [], []
        for x, magnitude in zip(features, self.magnitudes):
            scale = magnitude.view(-1, *([1] * (x.dim() - 2)))
            real.append((scale * torch.cos(x)).flatten(1))
            imag.append((scale * torch.sin(x)).flatten(1))
        return real, imag

    def forward(self, features: Sequence[torch.Tensor]) -> EulerOutput:
        real_p, imag_p = self.projected_parts(features)
        joined = join_parts(real_p, imag_p)
        return EulerOutput(features=joined, phases=[phase_of(f) for f in joined], real=real_p, imag=imag_p)

    def projected_parts(self, features: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per modality the projected real and imaginary parts; the feature is the two joined."""
        real, imag = self.complex_parts(features)
        if self.shared_projection:
            # One matmul over all modalities and both parts: the same weights, 2·M times fewer calls.
            stacked = self.dropout(torch.cat(real + imag, dim=0))
            projected = torch.relu(self.projection(stacked)).split([len(x) for x in real + imag], dim=0)
            real_p, imag_p = list(projected[: len(real)]), list(projected[len(real) :])
        else:
            real_p = [torch.relu(p(self.dropout(r))) for p, r in zip(self.projections, real)]
            imag_p = [torch.relu(p(self.dropout(i))) for p, i in zip(self.projections, imag)]
        return real_p, imag_p

    def _check_inputs(self, features: Sequence[torch.Tensor]) -> None:
        if len(features) != len(self.in_shapes):
            raise DataError(
                f"EulerRepresentation was built for {len(self.in_shapes)} modalities but got {len(features)} tensors"
            )
        for m, (x, shape) in enumerate(zip(features, self.in_shapes)):
            if tuple(x.shape[1:]) != shape:
                raise DataError(
                    f"modality {m}: expected features of shape (batch, {', '.join(map(str, shape))}), "
                    f"got {tuple(x.shape)}"
                )
