"""Data-parallel training across processes and machines with torch.distributed.

Launch any ``erlmr train`` command with torchrun, on one machine or several::

    torchrun --nproc_per_node=4 -m erlmr train --dataset avdigits --method erlmr
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --master_port=29500 --nproc_per_node=8 -m erlmr train ...

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; the trainer then joins the process group
(gloo on CPU, NCCL on CUDA, one GPU per process: ``cuda:LOCAL_RANK``). What changes under it:

* ``train.batch_size`` stays the *global* batch. Every rank draws the same seeded permutation, cuts it
  into the same global batches as a single process would, and takes its own contiguous share of each
  (:class:`ShardedBatchSampler`), so the data order does not depend on the number of processes.
* Every rank starts from rank 0's parameters; on CUDA, batch norm becomes SyncBatchNorm so that its
  statistics are those of the global batch. Gradients are averaged over the ranks by the step context
  (:mod:`erlmr.training.step`): in one flat all-reduce after the step's backward passes, or as they are
  taken for methods that combine several gradients. DDP's reduction inside the backward pass is not
  used: most balancing methods take several backward passes per step, or none through the model's
  forward, and their coefficients must come from the global gradients.
* Statistics that decide a coefficient are reduced across ranks (:func:`all_reduce_mean`,
  :func:`all_reduce_sum`, or a method's declared states), so every rank applies the same one; after
  every epoch the trainer checks that all replicas still hold the same parameters
  (:func:`check_replicas_agree`).
* Epoch metrics are summed over ranks. Only rank 0 evaluates, writes the run folder and prints; every
  rank returns the same summary.
"""

from __future__ import annotations

import atexit
import gc
import os
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from ..errors import ConfigError, TrainingDivergedError
from ..parallel import (
    all_reduce_mean,
    all_reduce_mean_lists,
    all_reduce_sum,
    is_distributed,
    world_size,
)

M = TypeVar("M", bound=nn.Module)

__all__ = [
    "Cluster",
    "ShardedBatchSampler",
    "all_reduce_mean",
    "all_reduce_mean_lists",
    "all_reduce_sum",
    "broadcast_from_main",
    "check_replicas_agree",
    "is_distributed",
    "join_from_env",
    "launched_rank",
    "share_from_main",
    "sum_over_ranks",
    "sync_batch_norm",
    "world_size",
]


@dataclass
class Cluster:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def join_from_env(device: torch.device, batch_size: int) -> Cluster:
    """Join the process group torchrun describes in the environment, or stay single if there is none.

    ``device`` is what ``train.device`` resolved to; under torchrun a CUDA device becomes
    ``cuda:LOCAL_RANK``. The global ``batch_size`` must split evenly across the processes.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return Cluster(0, 1, device)
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed; run a single process")
    if batch_size % size:
        raise ConfigError(
            f"train.batch_size is the global batch ({batch_size}) and must split evenly across the {size} "
            f"processes; use a multiple of {size}"
        )
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # Joined once per process and left at exit: several runs in one process (erlmr bench) share the
        # group, since torchrun's rendezvous does not serve a second join.
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_leave_process_group)
    return Cluster(dist.get_rank(), dist.get_world_size(), device)


def _leave_process_group() -> None:
    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def sync_batch_norm(model: M, cluster: Cluster) -> M:
    """On CUDA in a distributed run, batch norm with the statistics of the global batch (SyncBatchNorm)."""
    if cluster.distributed and cluster.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


@torch.no_grad()
def broadcast_from_main(modules: Sequence[nn.Module], cluster: Cluster) -> None:
    """Give every rank rank 0's parameters and buffers, so all replicas start alike."""
    if not cluster.distributed:
        return
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor, src=0)


class ShardedBatchSampler(Sampler[torch.Tensor]):
    """Batches of indices, as tensors, for one rank: a seeded permutation (or the plain order) cut into
    global batches of ``batch_size``, each split evenly across ``world_size`` ranks.

    In one process this yields exactly the batches of ``BatchSampler(RandomSampler(generator=seeded))``.
    The last, partial global batch keeps ``len // world_size`` samples per rank (up to ``world_size - 1``
    samples are left out so that every rank gets the same number); when shuffling, it is dropped if
    that leaves a single sample per rank and there are full batches, since one sample breaks batch norm.
    """

    def __init__(self, size: int, batch_size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ConfigError(f"batch size {batch_size} does not split evenly across {world_size} ranks")
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size

    def _global_batches(self) -> list[int]:
        full, rest = divmod(self.size, self.batch_size)
        share = rest // self.world_size
        keep_last = share >= 2 or (share == 1 and (full == 0 or not self.shuffle))
        return [self.batch_size] * full + ([share * self.world_size] if keep_last else [])

    def __iter__(self) -> Iterator[torch.Tensor]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed))
        else:
            order = torch.arange(self.size)
        start = 0
        for length in self._global_batches():
            share = length // self.world_size
            yield order[start + self.rank * share : start + (self.rank + 1) * share]
            start += length

    def __len__(self) -> int:
        return len(self._global_batches())


def sum_over_ranks(values: Mapping[str, float | torch.Tensor], cluster: Cluster) -> dict[str, float]:
    """Each value summed over all ranks (as floats), in one all-reduce; the values themselves in one process."""
    if not cluster.distributed:
        return {key: float(value) for key, value in values.items()}
    packed = torch.tensor([float(value) for value in values.values()], dtype=torch.float64, device=cluster.device)
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    return dict(zip(values, packed.tolist()))


def check_replicas_agree(parameters: Sequence[torch.Tensor], cluster: Cluster, epoch: int, rtol: float = 1e-5) -> None:
    """Raise if any rank's parameters differ from rank 0's: a sign that a method scaled gradients by a
    coefficient computed from its own rank's data only. Compares the norm of every parameter tensor."""
    if not cluster.distributed or not parameters:
        return
    norms = torch.stack(torch._foreach_norm([p.detach() for p in parameters])).double().to(cluster.device)
    gathered = [torch.empty_like(norms) for _ in range(cluster.world_size)]
    dist.all_gather(gathered, norms)
    for rank, other in enumerate(gathered[1:], start=1):
        if not torch.allclose(other, gathered[0], rtol=rtol, atol=0.0):
            raise TrainingDivergedError(
                f"after epoch {epoch + 1} the parameters on rank {rank} differ from rank 0's: a method applied a "
                "coefficient computed from its own rank's batch only; reduce the statistics behind it with "
                "erlmr.parallel.all_reduce_mean (or a declared state) so that every rank applies the same one"
            )


def share_from_main(value: Any, cluster: Cluster) -> Any:
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if not cluster.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
