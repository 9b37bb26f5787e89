"""Fusion heads: fused logits plus one logit tensor per modality.

Every head takes a list of per-modality feature vectors ``(B, D_m)`` and returns a
:class:`FusionOutput`. The per-modality logits are what unimodal losses and per-modality accuracy use;
each head's docstring says how it defines them. Concat and sum follow the fusion modules used in the
OGM-GE code (Peng et al., CVPR 2022); FiLM is Perez et al., AAAI 2018; the gated head is the one of
Kiela et al. 2018 as used by OGM-GE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, cast

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import Registry

FUSIONS: Registry[type["FusionHead"]] = Registry("fusion", positional=("in_features", "num_classes"))


@dataclass
class FusionOutput:
    logits: torch.Tensor
    modality_logits: list[torch.Tensor]


class FusionHead(nn.Module):
    """Base class: ``forward(features) -> FusionOutput`` for a list of (B, D_m) features."""

    max_modalities: int | None = None

    def __init__(self, in_features: Sequence[int], num_classes: int):
        super().__init__()
        if len(in_features) < 2:
            raise ConfigError(f"a fusion head needs at least two modalities, got {len(in_features)}")
        if self.max_modalities is not None and len(in_features) > self.max_modalities:
            raise ConfigError(
                f"{type(self).__name__} is defined for exactly {self.max_modalities} modalities, got "
                f"{len(in_features)}; use the 'concat' or 'sum' fusion for more"
            )
        self.in_features = [int(d) for d in in_features]
        self.num_classes = num_classes

    def output_weights(self) -> list[nn.Parameter]:
        """The weight matrices of the layer(s) that produce the logits (methods that watch the output
        layer's gradient use them). By default every matrix with one row per class."""
        return [p for p in self.parameters() if p.dim() == 2 and p.shape[0] == self.num_classes]


@FUSIONS.register("concat", "concatenate features, one linear layer; per-modality logits from its weight slices")
class ConcatFusion(FusionHead):
    """Concatenation then one linear layer.

    Modality m's logits are ``x_m W_mᵀ + b/M``, where ``W_m`` is the block of columns of the weight
    that multiplies ``x_m``; the per-modality logits therefore sum exactly to the fused logits.
    """

    def __init__(self, in_features: Sequence[int], num_classes: int):
        super().__init__(in_features, num_classes)
        self.linear = nn.Linear(sum(self.in_features), num_classes)

    def output_weights(self) -> list[nn.Parameter]:
        return [cast(nn.Parameter, self.linear.weight)]  # torch types a layer's weight as a plain Tensor

    def forward(self, features: Sequence[torch.Tensor]) -> FusionOutput:
        weights = self.linear.weight.split(self.in_features, dim=1)
        bias_share = self.linear.bias / len(features)
        modality_logits = [x @ w.T + bias_share for x, w in zip(features, weights)]
        return FusionOutput(torch.stack(modality_logits).sum(0), modality_logits)


@FUSIONS.register("sum", "one linear layer per modality, logits summed")
class SumFusion(FusionHead):
    """One linear layer per modality; the fused logits are their sum and modality m's are its layer's."""

    def __init__(self, in_features: Sequence[int], num_classes: int):
        super().__init__(in_features, num_classes)
        self.linears = nn.ModuleList(nn.Linear(d, num_classes) for d in self.in_features)

    def output_weights(self) -> list[nn.Parameter]:
        return [cast(nn.Parameter, layer.weight) for layer in self.linears]

    def forward(self, features: Sequence[torch.Tensor]) -> FusionOutput:
        modality_logits = [layer(x) for layer, x in zip(self.linears, features)]
        return FusionOutput(torch.stack(modality_logits).sum(0), modality_logits)


@FUSIONS.register("film", "FiLM both ways: each modality scales and shifts the other (two modalities)")
class FiLMFusion(FusionHead):
    """Feature-wise linear modulation (Perez et al., AAAI 2018) in both directions, for two modalities.

    Each modality m has its own conditioning layer ``film_m`` giving ``γ_m, β_m = film_m(x_m)``, which
    modulate the *other* modality; the two modulated features are concatenated into one linear output
    layer: fused logits ``= out([γ_1 ⊙ x_0 + β_1 ‖ γ_0 ⊙ x_1 + β_0])``. (The authors' code computes
    both modulations from one layer; see docs/fidelity.md.)

    Per-modality logits are the output layer's slice for that modality applied to its *unmodulated*
    feature (the partner's modulation set to the identity, γ = 1, β = 0) plus half the bias, so a
    modality's own logits carry no information from the other one.
    """

    max_modalities = 2

    def __init__(self, in_features: Sequence[int], num_classes: int):
        super().__init__(in_features, num_classes)
        first, second = self.in_features
        self.films = nn.ModuleList([nn.Linear(first, 2 * second), nn.Linear(second, 2 * first)])
        self.out = nn.Linear(first + second, num_classes)

    def output_weights(self) -> list[nn.Parameter]:
        return [cast(nn.Parameter, self.out.weight)]  # torch types a layer's weight as a plain Tensor

    def forward(self, features: Sequence[torch.Tensor]) -> FusionOutput:
        gamma_0, beta_0 = self.films[0](features[0]).chunk(2, dim=1)
        gamma_1, beta_1 = self.films[1](features[1]).chunk(2, dim=1)
        modulated = torch.cat([gamma_1 * features[0] + beta_1, gamma_0 * features[1] + beta_0], dim=1)
        weights = self.out.weight.split(self.in_features, dim=1)
        modality_logits = [x @ w.T + self.out.bias / 2 for x, w in zip(features, weights)]
        return FusionOutput(self.out(modulated), modality_logits)


@FUSIONS.register("gated", "gated fusion: a sigmoid gate from one modality masks the other (two modalities)")
class GatedFusion(FusionHead):
    """Gated fusion for two modalities, as in the OGM-GE code.

    Each modality has its own projection ``h_m = fc_m(x_m)``. The gating modality g (``gate_on``,
    default 0) masks the other: fused logits ``= out(σ(h_g) ⊙ h_u)``. Per-modality logits are
    ``out(h_m)``: each modality through its own projection and the shared output layer, ungated.
    """

    max_modalities = 2

    def __init__(self, in_features: Sequence[int], num_classes: int, gate_on: int = 0, hidden: int | None = None):
        super().__init__(in_features, num_classes)
        if gate_on not in (0, 1):
            raise ConfigError(f"gate_on must be 0 or 1, got {gate_on}")
        if hidden is not None and hidden < 1:
            raise ConfigError(f"fusion 'gated': hidden must be >= 1 (or null for the widest input), got {hidden}")
        self.gate_on = gate_on
        width = hidden or max(self.in_features)
        self.projections = nn.ModuleList(nn.Linear(d, width) for d in self.in_features)
        self.out = nn.Linear(width, num_classes)

    def output_weights(self) -> list[nn.Parameter]:
        return [cast(nn.Parameter, self.out.weight)]  # torch types a layer's weight as a plain Tensor

    def forward(self, features: Sequence[torch.Tensor]) -> FusionOutput:
        hidden = [layer(x) for layer, x in zip(self.projections, features)]
        gate = torch.sigmoid(hidden[self.gate_on])
        logits = self.out(gate * hidden[1 - self.gate_on])
        return FusionOutput(logits, [self.out(h) for h in hidden])
