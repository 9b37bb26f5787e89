"""Helpers that make the same code run in one process or under torch.distributed."""
from __future__ import annotations

from contextlib import nullcontext
from typing import ContextManager, Sequence

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over all ranks (the tensor itself in a single process); not in place."""
    if not is_distributed():
        return tensor
    reduced = tensor.detach().clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced / dist.get_world_size()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over all ranks (the tensor itself in a single process); not in place."""
    if not is_distributed():
        return tensor
    reduced = tensor.detach().clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced


def all_reduce_mean_lists(tensor_lists: Sequence[Sequence[torch.Tensor]]) -> None:
    """Replace every tensor of every list by its mean over all ranks, in place, with one all-reduce.

    Nothing happens in a single process. Under torch.distributed the tensors are copied into one flat
    buffer, reduced, and copied back.
    """
    if not is_distributed():
        return
    tensors = [t for tensors in tensor_lists for t in tensors]
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    torch._foreach_copy_(tensors, [part.view_as(t) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)])


def gradient_sync_disabled(model: torch.nn.Module) -> ContextManager:
    """A context in which a DDP-wrapped ``model``'s backward passes leave gradients rank-local.

    DDP all-reduces gradients as ``.backward()`` fills them, and never sees gradients taken with
    ``torch.autograd.grad``. A method that takes several backward passes per step, or takes gradients
    with ``autograd.grad``, runs its forward and backward passes in this context and reduces what it
    needs itself (:func:`all_reduce_mean_`). For a model that is not wrapped it does nothing.
    """
    no_sync = getattr(model, "no_sync", None)
    return no_sync() if no_sync is not None else nullcontext()
