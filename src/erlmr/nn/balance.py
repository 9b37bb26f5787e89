"""The balanced step in one call: min-norm (MGDA) weights of several losses, their weighted gradient in
``.grad``, in any training loop.

ERL-MR (Han, Cai, Guo, Peng, ACM MM 2024, doi:10.1145/3664647.3681215; authors' code
github.com/Weixiang-Han/ERL-MR-Harnessing-the-Power-of-Euler-Feature-Representations-for-Balanced-Multi-modal-Learning)
weights the fusion cross-entropy against the MMC loss with the min-norm point of their gradients on the
shared parameters (Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018)::

    optimizer.zero_grad()
    weights = balanced_backward([fusion_ce, mmc_loss], model.parameters(), shared=shared_parameters)
    optimizer.step()

``erlmr``'s own trainer takes the same step (:class:`erlmr.methods.erlmr.ERLMR` calls this function), so
a loop of one's own gets the trainer's gradients exactly. :class:`Gradients` is the small object both go
through: gradients averaged over the ranks of a torch.distributed run, so that every rank solves for the
same weights from the gradients of the whole batch and writes the same update.
"""

from __future__ import annotations

from typing import Iterable, Sequence, cast

import torch
from torch import nn

from ..errors import ConfigError
from ..parallel import (
    all_reduce_mean,
    all_reduce_mean_lists,
    all_reduce_sum,
    is_distributed,
    world_size,
)
from .pareto import NORMALIZATIONS, min_norm_weights_from_gram


class Gradients:
    """Loss gradients for the parameters of one step, averaged over ranks in a distributed run.

    ``backward(loss)`` accumulates into ``.grad`` (rank-local until :meth:`synchronize` averages it);
    ``gradients(losses, params)`` returns each loss's gradients already averaged, leaving ``.grad`` alone;
    ``add_gradients(params, grads)`` adds averaged gradients to ``.grad``. In one process every reduction
    is the identity. Use it on a model that DDP does not reduce on its own (unwrapped, or under
    ``no_sync()``).
    """

    #: keep every value on the device, never reading one on the host: set while a CUDA graph captures
    #: the step (:class:`erlmr.training.acceleration.CudaGraphStep`); the weights are then solved there
    device_solve = False

    def __init__(self, parameters: Iterable[nn.Parameter]):
        self.parameters = list(parameters)
        self._local_gradients = False
        self._pending: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []

    reduce_mean = staticmethod(all_reduce_mean)
    reduce_sum = staticmethod(all_reduce_sum)

    def backward(self, loss: torch.Tensor, retain_graph: bool = False) -> None:
        """Accumulate ``loss``'s gradients into ``.grad`` (averaged over ranks by :meth:`synchronize`)."""
        loss.backward(retain_graph=retain_graph)
        self._local_gradients = True

    def gradients(
        self, losses: Sequence[torch.Tensor], params: Sequence[torch.Tensor], retain_graph: bool = False
    ) -> list[list[torch.Tensor]]:
        """Each loss's gradients with respect to ``params`` (zeros where a parameter is unused), averaged
        over ranks in one all-reduce. ``.grad`` is left alone. The graph is kept for all but the last
        loss, and for the last one too with ``retain_graph``."""
        grads = []
        for i, loss in enumerate(losses):
            keep = retain_graph or i < len(losses) - 1
            grads.append(list(torch.autograd.grad(loss, params, retain_graph=keep, materialize_grads=True)))
        all_reduce_mean_lists(grads)
        return grads

    def feature_gradients(
        self, losses: Sequence[torch.Tensor], features: Sequence[torch.Tensor]
    ) -> list[list[torch.Tensor]]:
        """Each loss's gradients with respect to ``features``, tensors of this rank's share of the batch
        (zeros where unused), not averaged over ranks; the graph is kept."""
        return [list(torch.autograd.grad(loss, features, retain_graph=True, materialize_grads=True)) for loss in losses]

    def add_gradients(self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> None:
        """Add ``grads`` (already averaged over ranks, e.g. built from :meth:`gradients`) to ``.grad``."""
        if is_distributed() and self._local_gradients:
            self._pending.append((list(params), list(grads)))  # added after the local ones are averaged
        else:
            _accumulate(params, grads)

    def synchronize(self) -> None:
        """Average what ``backward`` left in ``.grad`` over the ranks, then add the pending gradients."""
        if is_distributed() and self._local_gradients:
            average_gradients(self.parameters)
        for params, grads in self._pending:
            _accumulate(params, grads)
        self._local_gradients, self._pending = False, []


def balanced_backward(
    losses: Sequence[torch.Tensor],
    parameters: Iterable[nn.Parameter],
    *,
    shared: Iterable[nn.Parameter] | None = None,
    features: Sequence[torch.Tensor] | None = None,
    targets: Sequence[torch.Tensor] | None = None,
    normalization: str = "loss+",
    weight_floor: float = 0.001,
    gradients: Gradients | None = None,
) -> torch.Tensor:
    """Solve the min-norm weights of ``losses`` and write ``Σ_i w_i ∇loss_i`` into ``.grad`` of
    ``parameters`` (added to what is there); return the weights, a float CPU tensor summing to 1.

    * ``shared`` (default: every parameter): the parameters whose gradients the weights are solved from,
      e.g. the encoders and the Euler map, not the heads (exact MGDA: one backward pass per loss).
    * ``features``: solve instead from the gradients with respect to these tensors, which every loss
      depends on, e.g. the fusion-head inputs (MGDA-UB: backward passes through the head only, then one
      ordinary backward of the weighted loss). ``shared`` is then unused.
    * ``targets``: solve against these losses' gradients (one per loss) but combine ``losses``, as the
      ERL-MR authors' code does with twice its phase term.
    * ``normalization``: each gradient is divided by its norm, its loss, both (``"loss+"``, the authors'
      choice) or nothing before solving; ``weight_floor`` clamps every weight to [floor, 1 − floor] for
      two losses (the authors' 0.001), or from below for more.

    Any number of losses works (two have a closed form). In a torch.distributed run the gradients and
    losses are averaged over ranks first (pass ``gradients`` to share a step's :class:`Gradients`). With
    ``gradients.device_solve`` (two losses) nothing is read on the host: the weights come back on the
    device, solved there by the same closed form.
    """
    if len(losses) < 2 or (targets is not None and len(targets) != len(losses)):
        raise ConfigError(f"balanced_backward needs two or more losses (and as many targets); got {len(losses)}")
    if features is None or gradients is None:  # features mode with a step's Gradients never lists them
        parameters = [p for p in parameters if p.requires_grad]
    book = gradients or Gradients(parameters)
    on_device = getattr(book, "device_solve", False)
    if on_device and len(losses) != 2:
        raise ConfigError(f"solving the weights on the device (CUDA-graph capture) takes two losses, got {len(losses)}")
    if features is not None:
        grads = book.feature_gradients(targets or losses, features)
        weights = _weights_from_features(grads, targets or losses, normalization, weight_floor, on_device)
        book.backward(weighted_sum(weights, losses))
    else:
        params = cast("list[nn.Parameter]", parameters)  # without features, made a list above
        weights = _backward_on_parameters(losses, targets, params, shared, book, normalization, weight_floor, on_device)
    if gradients is None:
        book.synchronize()
    return weights


def _backward_on_parameters(
    losses: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor] | None,
    params: list[nn.Parameter],
    shared: Iterable[nn.Parameter] | None,
    book: Gradients,
    normalization: str,
    floor: float,
    on_device: bool,
) -> torch.Tensor:
    """Every loss's gradients on every parameter (one backward each), the weights from their parts on
    the shared parameters, then their combination, in place and tensor list by tensor list
    (``torch._foreach_*``), so the step holds one gradient per loss and copies none."""
    shared_ids = {id(p) for p in (params if shared is None else shared)}
    on_shared = [i for i, p in enumerate(params) if id(p) in shared_ids]
    targets = list(targets or losses)
    # A target that is its loss reuses that loss's gradient; only the others take a backward pass of their own.
    distinct = [i for i, (target, loss) in enumerate(zip(targets, losses)) if target is not loss]
    own = book.gradients([targets[i] for i in distinct], [params[i] for i in on_shared], retain_graph=True)
    grads = book.gradients(losses, params)
    solved_from = [[g[i] for i in on_shared] for g in grads]
    for k, i in enumerate(distinct):
        solved_from[i] = own[k]
    values = mean_losses(targets)
    if on_device:
        weights = solve_on_device(gram_matrix(solved_from), values, normalization, floor)
        combined = combine_on_device(weights, grads)
    else:
        if len(losses) == 2:
            gram, loss_values = gram_of_two(solved_from[0], solved_from[1], values)
        else:
            gram, loss_values = gram_of_many(solved_from, values)
        weights = solve(gram, loss_values, normalization, floor)
        combined = grads[0]
        torch._foreach_mul_(combined, float(weights[0]))
        for w, g in zip(weights.tolist()[1:], grads[1:]):
            torch._foreach_add_(combined, g, alpha=w)
    book.add_gradients(params, combined)
    return weights


def combine_on_device(weights: torch.Tensor, grads: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """Σ_i w_i·g_i in place in the gradient lists, the weights a device tensor (no value read on the host)."""
    for w, g in zip(weights.unbind(), grads):
        torch._foreach_mul_(g, w)
    for g in grads[1:]:
        torch._foreach_add_(grads[0], g)
    return grads[0]


def weighted_sum(weights: torch.Tensor, losses: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ_i w_i·loss_i, with the weights as numbers when they are on the host and as tensors on a device."""
    factors = weights.tolist() if weights.device.type == "cpu" else weights.unbind()
    return sum(w * loss for w, loss in zip(factors, losses))


def _weights_from_features(
    grads: Sequence[Sequence[torch.Tensor]],
    targets: Sequence[torch.Tensor],
    normalization: str,
    floor: float,
    on_device: bool,
) -> torch.Tensor:
    """Weights from each target's gradients with respect to the features (MGDA-UB).

    A rank's feature gradients are the rows of the global ones for its share of the batch, scaled by the
    world size (each rank's loss is a mean over its share), so the global Gram matrix is the sum over
    ranks of the local ones divided by the world size squared.
    """
    flat = torch.stack([torch.cat([g.flatten() for g in per_target]) for per_target in grads])
    gram = flat @ flat.T
    if world_size() > 1:
        gram = all_reduce_sum(gram.double()) / world_size() ** 2
    if on_device:
        return solve_on_device(gram, mean_losses(targets), normalization, floor)
    count = len(targets)
    values = to_host(gram, mean_losses(targets))
    matrix = [values[i * count : (i + 1) * count] for i in range(count)]
    return solve(matrix, values[count * count :], normalization, floor)


def solve(
    gram: Sequence[Sequence[float]], loss_values: Sequence[float], normalization: str, floor: float
) -> torch.Tensor:
    """Min-norm weights (a float32 CPU tensor) from a Gram matrix and the loss values, floored.

    The scalars come to the host once per step: a 2x2 problem is not worth dozens of device kernels.
    """
    weights = min_norm_weights_from_gram(
        torch.tensor(gram, dtype=torch.float64), torch.tensor(loss_values, dtype=torch.float64), normalization
    )
    if len(weights) == 2:
        return weights.clamp(floor, 1 - floor)
    floored = weights.clamp_min(floor)
    return floored / floored.sum()


def solve_on_device(gram: torch.Tensor, loss_values: torch.Tensor, normalization: str, floor: float) -> torch.Tensor:
    """:func:`solve` for two losses without reading a value on the host: the same normalisation, closed
    form (Sener & Koltun, Algorithm 1) and floor, in float64 on the Gram matrix's device; a float32
    tensor there. Nothing is checked on the host: a NaN or Inf gradient reaches ``.grad``, where the
    trainer's finiteness check stops the run."""
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"unknown gradient normalization {normalization!r}; valid: {', '.join(NORMALIZATIONS)}")
    gram = gram.double()
    norms = gram.diagonal().clamp_min(0).sqrt()
    losses = loss_values.to(gram)
    scale = {"none": torch.ones_like(norms), "l2": norms, "loss": losses, "loss+": losses * norms}[normalization]
    scale = scale.clamp_min(1e-12)
    (g11, g12), (_, g22) = gram / torch.outer(scale, scale)
    denominator = g11 + g22 - 2 * g12
    first = torch.where(denominator > 0, ((g22 - g12) / denominator).clamp(0.0, 1.0), torch.full_like(g11, 0.5))
    return torch.stack([first, 1 - first]).float().clamp(floor, 1 - floor)


def squared_norms(groups: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """Σ‖t‖² over each group of tensors, in float64, from one multi-tensor norm kernel for all groups."""
    sizes = [len(group) for group in groups]
    norms = torch.stack(torch._foreach_norm([t for group in groups for t in group])).double()
    return torch.stack([part.square().sum() for part in norms.split(sizes)])


def gram_of_two(
    first: list[torch.Tensor], second: list[torch.Tensor], extra: torch.Tensor
) -> tuple[list[list[float]], list[float]]:
    """The Gram matrix of two gradients given as lists of tensors, without a copy of either, and the
    values of ``extra`` (fetched in the same transfer).

    ⟨a, b⟩ comes from the polarisation identity on unit vectors, ‖a/‖a‖ + b/‖b‖‖² = 2 + 2·cos, formed
    in place in ``second``, which is then scaled back; it is as exact as the cosine, however different
    the two norms are.
    """
    norm_a, norm_b, *extra_values = to_host(squared_norms([first, second]).sqrt(), extra)
    norm_a, norm_b = max(norm_a, 1e-30), max(norm_b, 1e-30)
    torch._foreach_mul_(second, 1 / norm_b)
    torch._foreach_add_(second, first, alpha=1 / norm_a)
    (sum_square,) = to_host(squared_norms([second]))
    torch._foreach_add_(second, first, alpha=-1 / norm_a)
    torch._foreach_mul_(second, norm_b)
    cross = norm_a * norm_b * (sum_square - 2) / 2
    return [[norm_a**2, cross], [cross, norm_b**2]], extra_values


def gram_matrix(grads: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """The Gram matrix (M, M) of M gradients given as lists of tensors, from per-tensor float64 dot products."""
    count = len(grads)
    dots = [
        torch.stack([(a.double() * b.double()).sum() for a, b in zip(grads[i], grads[j])]).sum()
        for i in range(count)
        for j in range(count)
    ]
    return torch.stack(dots).view(count, count)


def gram_of_many(grads: Sequence[Sequence[torch.Tensor]], extra: torch.Tensor) -> tuple[list[list[float]], list[float]]:
    """The Gram matrix of several gradients (lists of tensors) and the values of ``extra``, in one transfer."""
    count = len(grads)
    values = to_host(gram_matrix(grads), extra)
    return [values[i * count : (i + 1) * count] for i in range(count)], values[count * count :]


def mean_losses(losses: Sequence[torch.Tensor]) -> torch.Tensor:
    """The loss values averaged over ranks (each rank's loss is the mean over its share of the batch)."""
    return all_reduce_mean(torch.stack([loss.detach() for loss in losses]))


def to_host(*tensors: torch.Tensor) -> list[float]:
    """The values of several small device tensors, in one transfer."""
    return torch.cat([t.detach().double().reshape(-1) for t in tensors]).tolist()


def _accumulate(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> None:
    for p, g in zip(params, grads):
        p.grad = g if p.grad is None else p.grad + g


def average_gradients(params: Sequence[nn.Parameter]) -> None:
    """Every parameter's gradient averaged over the ranks, in one all-reduce. A parameter with no
    gradient on some rank counts as zero there; one with no gradient on any rank keeps none."""
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    present = torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)
    all_reduce_mean_lists([grads, [present]])
    for p, grad, seen in zip(params, grads, present.tolist()):
        p.grad = grad if seen > 0 else None
