"""The few torch.distributed reductions the drop-in pieces and the methods need; each is the identity
in a single process, so the same code runs alone, under ``torchrun`` and under Lightning's DDP."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over all ranks (the tensor itself in a single process); not in place."""
    if not is_distributed():
        return tensor
    return all_reduce_sum(tensor) / dist.get_world_size()


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
    tensors = [t for tensors in tensor_lists for t in tensors]
    if not is_distributed() or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    torch._foreach_copy_(
        tensors, [part.view_as(t) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]
    )
