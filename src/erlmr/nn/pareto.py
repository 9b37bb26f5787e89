"""Min-norm (MGDA) weights for combining several losses' gradients.

Sener & Koltun. "Multi-Task Learning as Multi-Objective Optimization". NeurIPS 2018.
Désidéri. "Multiple-gradient descent algorithm (MGDA) for multiobjective optimization". 2012.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import ConfigError, TrainingDivergedError

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


def gradient_scale(norm: float, loss: float | None, normalization: str) -> float:
    """What MGDA-UB divides one gradient by: 1, its L2 norm, its loss, or both (``"loss+"``)."""
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"unknown gradient normalization {normalization!r}; valid: {', '.join(NORMALIZATIONS)}")
    if normalization in ("loss", "loss+") and loss is None:
        raise ConfigError(f"gradient normalization {normalization!r} needs the losses")
    if normalization == "none":
        return 1.0
    if normalization == "l2":
        return norm
    assert loss is not None  # checked above for "loss" and "loss+"
    return loss if normalization == "loss" else loss * norm


def _scales(
    norms: Sequence[float], losses: Sequence[float] | torch.Tensor | None, normalization: str, eps: float
) -> list[float]:
    per_loss = [None] * len(norms) if losses is None else [float(loss) for loss in losses]
    return [max(gradient_scale(n, loss, normalization), eps) for n, loss in zip(norms, per_loss)]


def normalize_gradients(
    grads: torch.Tensor, losses: torch.Tensor | None, normalization: str, eps: float = 1e-12
) -> torch.Tensor:
    """Scale each row of ``grads`` (M, P) as MGDA-UB does: by its L2 norm, its loss, both, or not at all."""
    scales = _scales(grads.norm(dim=1).tolist(), losses, normalization, eps)
    return grads / grads.new_tensor(scales).unsqueeze(1)


def two_task_weight(g11: float, g12: float, g22: float) -> float:
    """Weight of the first of two gradients in their min-norm point, from their inner products
    (Sener & Koltun, Algorithm 1); 0.5 when the two are equal."""
    denominator = g11 + g22 - 2 * g12
    if denominator <= 0:
        return 0.5
    return min(max((g22 - g12) / denominator, 0.0), 1.0)


def min_norm_point(gram: torch.Tensor, iterations: int = 500) -> torch.Tensor:
    """Weights ``w`` on the simplex minimising ``wᵀ G w`` for a Gram matrix ``G`` (M, M).

    M = 2 has the closed form of Sener & Koltun (Algorithm 1). For M > 2 this runs accelerated projected
    gradient descent on the simplex, which converges to the exact minimiser of this convex problem.
    """
    m = gram.shape[0]
    gram = gram.double()
    if m == 1:
        return gram.new_ones(1)
    if m == 2:
        (g11, g12), (_, g22) = gram.tolist()
        first = two_task_weight(g11, g12, g22)
        return gram.new_tensor([first, 1 - first])
    step = 1.0 / (2 * torch.linalg.eigvalsh(gram).max().clamp_min(1e-30))
    w = gram.new_full((m,), 1.0 / m)
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
    ranks = torch.arange(1, len(v) + 1, dtype=v.dtype, device=v.device)
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
        A float CPU tensor of M non-negative weights summing to 1, to multiply the losses (or the raw
        gradients) with.
    """
    matrix = grads if isinstance(grads, torch.Tensor) else torch.stack([g.detach().flatten() for g in grads])
    matrix = matrix.detach().reshape(len(matrix), -1).double()
    if len(matrix) == 0:
        raise ConfigError("min_norm_weights needs at least one gradient")
    return min_norm_weights_from_gram(matrix @ matrix.T, losses, normalization)


def min_norm_weights_from_gram(
    gram: torch.Tensor,
    losses: Sequence[float] | torch.Tensor | None = None,
    normalization: str = "none",
    eps: float = 1e-12,
) -> torch.Tensor:
    """:func:`min_norm_weights` from the Gram matrix ``G[i, j] = ⟨g_i, g_j⟩`` of the M gradients.

    The solution depends on the gradients only through ``G``, so callers can form it without ever
    stacking the gradients into one matrix, or sum it over the ranks of a distributed run. The M x M
    problem is solved on the CPU; the weights come back there.
    """
    values = gram.detach().double().cpu()
    if not torch.isfinite(values).all():
        raise TrainingDivergedError("min_norm_weights got a gradient containing NaN or Inf")
    if losses is not None and len(losses) != len(values):
        raise ConfigError(f"got {len(values)} gradients but {len(losses)} losses")
    scales = values.new_tensor(_scales(values.diagonal().clamp_min(0).sqrt().tolist(), losses, normalization, eps))
    return min_norm_point(values / torch.outer(scales, scales)).float()
