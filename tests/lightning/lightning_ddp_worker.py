"""Trains erlmr's ERL-MR step with BalancedModule under Lightning; test_lightning_ddp.py runs it with the ddp strategy.

    python tests/lightning/lightning_ddp_worker.py OUT DEVICES BATCH

With DEVICES=2 Lightning's ddp strategy (gloo on CPU) starts the second process by running this script
again. Every rank saves ``OUT/rank{r}.pt``: its parameters and buffers after training, the metrics it
logged, and how many gradient buckets DDP's own reducer all-reduced (erlmr's step context does the
reduction, so none). :func:`fit` with DEVICES=1 is the single-process reference (test_lightning_ddp.py
calls it in-process).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning.pytorch as L
import torch
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from erlmr.data import load_dataset
from erlmr.lightning import BalancedModule, ImbalanceCallback, split_loader


class CountDDPReductions(L.Callback):
    """Counts the gradient buckets DDP's own reducer all-reduces in backward passes (it reduces them too)."""

    count = 0

    def on_fit_start(self, trainer, pl_module):
        if isinstance(trainer.strategy.model, DistributedDataParallel):
            trainer.strategy.model.register_comm_hook(None, self.hook)

    def hook(self, state, bucket):
        self.count += 1
        return allreduce_hook(None, bucket)


def fit(out: Path, devices: int, batch_size: int) -> None:
    """Two epochs of ERL-MR on synthetic data: min-norm weights from the Gram matrix of both losses'
    feature gradients over the whole batch, then one backward pass of the weighted loss. MLP encoders and
    no dropout, so nothing random differs between one process and two."""
    L.seed_everything(3)
    splits = load_dataset("synthetic", None, 3, 0.25, {"train_size": 128, "test_size": 16})
    module = BalancedModule(
        {m: "mlp" for m in splits.modalities},
        splits.num_classes,
        "erlmr",
        {"pareto_mode": "features"},
        model={"euler_dropout": 0.0, "encoder_options": {m: {"hidden": 32} for m in splits.modalities}},
        optim={"name": "adam", "lr": 0.01},
        input_shapes=splits.input_shapes(),
    )
    counter = CountDDPReductions()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        callbacks=[ImbalanceCallback(), counter],
        default_root_dir=out,
    )
    trainer.fit(module, train_loader(splits.train, devices, batch_size), split_loader(splits.val, batch_size))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    saved = {"state": state, "metrics": metrics, "world_size": trainer.world_size, "ddp_reductions": counter.count}
    torch.save(saved, out / f"rank{trainer.global_rank}.pt")


def train_loader(split, devices: int, batch_size: int):
    """Under ddp Lightning shuffles the training data with a DistributedSampler (seeded with the seed of
    ``seed_everything`` and the epoch), each rank taking every other sample of its permutation; one
    process takes the same permutation whole, so that its batches of twice the size hold the samples
    both ranks' batches hold."""
    if devices > 1:
        return split_loader(split, batch_size)
    order = DistributedSampler(split, num_replicas=1, rank=0, shuffle=True, seed=int(os.environ["PL_GLOBAL_SEED"]))
    return split_loader(split, batch_size, sampler=order)


if __name__ == "__main__":
    torch.set_num_threads(1)
    fit(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
