"""Min-norm (MGDA) weights for combining several losses' gradients.

Sener & Koltun. "Multi-Task Learning as Multi-Objective Optimization". NeurIPS 2018.
Désidéri. "Multiple-gradient descent algorithm (MGDA) for multiobjective optimization". 2012.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .errors import ConfigError, TrainingDivergedError

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


def normalize_gradients(
    grads: torch.Tensor, losses: torch.Tensor | None, normalization: str, eps: float = 1e-12
) -> torch.Tensor:
    """Scale each row of ``grads`` (M, P) as MGDA-UB does: by its L2 norm, its loss, both, or not at all."""
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"unknown gradient normalization {normalization!r}; valid: {', '.join(NORMALIZATIONS)}")
    if normalization in ("loss", "loss+") and losses is None:
        raise ConfigError(f"gradient normalization {normalization!r} needs the losses")
    if normalization == "none":
        return grads
    norms = grads.norm(dim=1)
    if normalization == "l2":
        scale = norms
    elif normalization == "loss":
        scale = losses
    else:
        scale = losses * norms
    return grads / scale.clamp_min(eps).unsqueeze(1)


def min_norm_point(gram: torch.Tensor, iterations: int = 500) -> torch.Tensor:
    """Weights ``w`` on the simplex minimising ``wᵀ G w`` for a Gram matrix ``G`` (M, M).

    M = 2 has the closed form of Sener & Koltun (Algorithm 1). For M > 2 this runs accelerated projected
    gradient descent on the simplex, which converges to the exact minimiser of this convex problem.
    """
    m = gram.shape[0]
    gram = gram.double()
    if m == 1:
        return torch.ones(1, dtype=gram.dtype)
    if m == 2:
        g11, g12, g22 = gram[0, 0], gram[0, 1], gram[1, 1]
        denominator = g11 + g22 - 2 * g12
        if denominator <= 0:
            return torch.full((2,), 0.5, dtype=gram.dtype)
        first = ((g22 - g12) / denominator).clamp(0.0, 1.0)
        return torch.stack([first, 1 - first])
    step = 1.0 / (2 * torch.linalg.eigvalsh(gram).max().clamp_min(1e-30))
    w = torch.full((m,), 1.0 / m, dtype=gram.dtype)
    momentum_point, t = w.clone(), 1.0
    for _ in range(iterations):
        w_next = project_to_simplex(momentum_point - step * 2 * gram @ momentum_point)
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        momentum_point = w_next + ((t - 1) / t_next) * (w_next - w)
        w, t = w_next, t_next
    return w


def project_to_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto {w ≥ 0, Σw = 1} (Held, Wolfe & Crowder 1974; sort-based)."""
    u, _ = torch.sort(v, descending=True)
    cumulative = torch.cumsum(u, dim=0) - 1
    ranks = torch.arange(1, len(v) + 1, dtype=v.dtype)
    support = (u - cumulative / ranks) > 0
    rho = int(torch.nonzero(support).max())
    theta = cumulative[rho] / (rho + 1)
    return (v - theta).clamp_min(0)


def min_norm_weights(
    grads: Sequence[torch.Tensor] | torch.Tensor,
    losses: Sequence[float] | torch.Tensor | None = None,
    normalization: str = "none",
) -> torch.Tensor:
    """The min-norm point in the convex hull of M gradient vectors, as weights on the simplex.

    Args:
        grads: M gradients (any shapes; each is flattened) or one (M, P) tensor.
        losses: the M loss values, needed by the ``"loss"`` and ``"loss+"`` normalizations.
        normalization: ``"none"``, ``"l2"`` (unit gradients), ``"loss"`` (gradient / loss) or ``"loss+"``
            (gradient / (loss · ‖gradient‖)), applied before solving, as in MGDA-UB.

    Returns:
        A float tensor of M non-negative weights summing to 1, to multiply the losses (or the raw
        gradients) with.
    """
    matrix = grads if isinstance(grads, torch.Tensor) else torch.stack([g.detach().flatten() for g in grads])
    matrix = matrix.detach().reshape(len(matrix), -1).double()
    if len(matrix) == 0:
        raise ConfigError("min_norm_weights needs at least one gradient")
    if not torch.isfinite(matrix).all():
        raise TrainingDivergedError("min_norm_weights got a gradient containing NaN or Inf")
    loss_tensor = None if losses is None else torch.as_tensor(losses, dtype=torch.float64).detach().reshape(-1)
    if loss_tensor is not None and len(loss_tensor) != len(matrix):
        raise ConfigError(f"got {len(matrix)} gradients but {len(loss_tensor)} losses")
    matrix = normalize_gradients(matrix, loss_tensor, normalization)
    return min_norm_point(matrix @ matrix.T).float()
