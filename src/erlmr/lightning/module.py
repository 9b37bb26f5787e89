"""Any registered erlmr method (compositions too) trained by PyTorch Lightning on a user's encoders.

:class:`BalancedModule` builds what ``erlmr train`` builds from its config (the
:class:`~erlmr.nn.model.MultiModalModel` around the encoders, with the fusion head and, if the method or
``model.euler`` asks, the Euler representation of ERL-MR: Han, Cai, Guo, Peng, ACM MM 2024,
doi:10.1145/3664647.3681215; official code
github.com/Weixiang-Han/ERL-MR-Harnessing-the-Power-of-Euler-Feature-Representations-for-Balanced-Multi-modal-Learning)
and the method, and trains them with Lightning's manual optimisation: every batch runs the method's
own training step (:func:`erlmr.training.step.method_step`) through a :class:`LightningStepContext`,
whose backward passes go through ``manual_backward`` and whose updates go through the
``LightningOptimizer``. A method may then take several backward passes, ``autograd.grad`` gradients
it combines, several updates per batch, and reset the optimiser's state, as in erlmr's own trainer.

**DDP.** erlmr's step context averages gradients over the ranks itself (once the step's backward
passes are done, or as ``autograd.grad`` gradients are taken, so that min-norm weights and rescaling
see the global gradients). DDP's own reduction inside the backward pass would average them a second
time, or not at all for ``autograd.grad``, so the module runs its step under the DDP wrapper's
``no_sync()``: with ``Trainer(strategy="ddp")`` the reduction is erlmr's alone, and every rank applies
the same update (checked after every epoch, as ``erlmr train`` does). DDP then broadcasts no buffers
either: batch-norm statistics stay per rank unless ``Trainer(sync_batchnorm=True)``. Strategies that
shard or wrap the model otherwise (FSDP, DeepSpeed) are refused.

**Checkpoints** are Lightning's: the model and the method are submodules, so their weights and every
declared method state are in the module's state dict; the optimiser, the schedule and the loop position
are Lightning's to save, and the module adds the torch, numpy and Python RNG states, so that a run
resumed with ``Trainer.fit(ckpt_path=...)`` from an epoch-end checkpoint continues as the uninterrupted
run does (in one process; under DDP every rank gets rank 0's RNG states back, so random draws on the
other ranks, dropout masks say, differ from the uninterrupted run's).
"""

from __future__ import annotations

import dataclasses
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Mapping, Sequence, cast

import lightning.pytorch as L
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from ..analysis.evaluation import EvaluationTally
from ..config import Config
from ..data import DatasetSplits, Split
from ..encoders.base import build_encoder, check_encoder
from ..errors import ConfigError, DataError, TrainingDivergedError
from ..methods import method_class
from ..methods.base import StepResult
from ..training.builders import (
    as_config,
    assemble_model,
    build_optimizer,
    build_scheduler,
    build_training_method,
    collate_batch,
    trainable_parameters,
)
from ..training.distributed import Cluster, check_replicas_agree
from ..training.runstate import capture_rng, restore_rng
from ..training.step import StepContext, method_step
from .imbalance import flat_metrics

#: the checkpoint entry holding the RNG states
RNG_KEY = "erlmr_rng"


class LightningStepContext(StepContext):
    """The step context of a Lightning module's manual optimisation: ``backward`` through
    ``manual_backward`` (the precision plugin and the strategy see every backward pass), updates through
    the ``LightningOptimizer`` (Lightning's optimizer-step hooks, ``global_step``), clipping through
    ``LightningModule.clip_gradients``. Gradients are averaged over ranks as in :class:`StepContext`."""

    def __init__(self, module: L.LightningModule, optimizer: Any, parameters: Sequence[nn.Parameter], **where: Any):
        super().__init__(optimizer.optimizer, parameters, **where)
        self.module, self.lightning_optimizer = module, optimizer

    def backward(self, loss: torch.Tensor, retain_graph: bool = False) -> None:
        self.module.manual_backward(loss, retain_graph=retain_graph)
        self._local_gradients = True

    def update(self) -> None:
        if self.grad_clip > 0:
            self.module.clip_gradients(
                self.lightning_optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm"
            )
        self.lightning_optimizer.step()


class BalancedModule(L.LightningModule):
    """A registered erlmr method trained on ``encoders`` by Lightning (see the module docstring).

    * ``encoders``: one per modality, in order: an ``nn.Module`` with ``output_shape`` ((C, L) or (D,)),
      or the name of an erlmr encoder (then ``input_shapes``, or ``splits``, gives its input's shape).
    * ``method`` and ``method_options``: a registered method or a composition (``"erlmr+ogm_ge"``, options
      keyed by part), exactly as ``method.name`` / ``method.options`` of an erlmr config.
    * ``model``, ``optim``: erlmr's ``model`` and ``optim`` config sections (fusion, Euler map, encoder
      options; optimiser, schedule, ``grad_clip``), validated as ``erlmr train`` validates them.
      Override ``configure_optimizers`` to use another optimiser: it must cover ``self.parameters()``.
    * ``splits`` for a method that reads the training data in its hooks (pmr, gblending);
      ``batch_size`` is what such a method batches its passes with.

    Batches are ``(dict of modality tensors, labels)``; :func:`split_loader` makes them from an erlmr split.
    Validation logs ``val_accuracy``, ``val_loss``, ``val_macro_f1``, and per modality
    ``val_modality_accuracy/m``, ``val_contribution/m`` (Shapley), ``val_missing_modality_accuracy/m``,
    and ``val_imbalance_degree``, summed over ranks before they are computed. Training logs
    ``train_loss``, ``train_accuracy`` and the method's own logs (``method/...``) per epoch.
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module | str],
        num_classes: int,
        method: str = "erlmr",
        method_options: Mapping[str, Any] | None = None,
        *,
        model: Mapping[str, Any] | None = None,
        optim: Mapping[str, Any] | None = None,
        input_shapes: Mapping[str, Sequence[int]] | None = None,
        splits: DatasetSplits | None = None,
        batch_size: int = 16,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["encoders", "splits"])
        self.automatic_optimization = False
        self.config = module_config(method, method_options, model, optim, batch_size)
        shapes = {m: tuple(s) for m, s in (input_shapes or (splits.input_shapes() if splits else {})).items()}
        built = {m: self.encoder(m, e, shapes) for m, e in encoders.items()}
        use_euler = method_class(method).uses_euler if self.config.model.euler is None else self.config.model.euler
        self.model = assemble_model(self.config.model, list(built), built, num_classes, use_euler, shapes or None)
        self.method = build_training_method(self.config, self.model, torch.device("cpu"), splits)
        self._tallies: dict[int, EvaluationTally] = {}

    def encoder(self, modality: str, encoder: nn.Module | str, shapes: Mapping[str, tuple[int, ...]]) -> nn.Module:
        if not isinstance(encoder, str):
            return check_encoder(encoder, f"the encoder of modality {modality!r}")
        if modality not in shapes:
            raise ConfigError(
                f"encoder {encoder!r} of modality {modality!r} is built by name, so it needs the shape of one "
                f"input sample: pass input_shapes={{{modality!r}: (...)}} or splits="
            )
        return build_encoder(encoder, shapes[modality], self.config.model.encoder_options.get(modality, {}))

    # ------------------------------------------------------------------------- what Lightning calls
    def forward(self, inputs: Mapping[str, torch.Tensor], absent: Sequence[str] = ()) -> Any:
        """The method's prediction (a ModelOutput: ``logits``, ``modality_logits``...); ``absent``
        modalities are missing, as in erlmr's evaluation (so :func:`erlmr.diagnose` asks v(∅) itself)."""
        return self.method.predict(self.model, inputs, absent)

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.config, trainable_parameters(self.model, self.method))
        epochs = self.trainer.max_epochs if self._trainer is not None else None
        if self.config.optim.schedule == "cosine" and not (epochs and epochs > 0):
            raise ConfigError("optim.schedule 'cosine' anneals over the run's epochs; give Trainer(max_epochs=N)")
        config = dataclasses.replace(self.config, train=dataclasses.replace(self.config.train, epochs=epochs or 1))
        scheduler = build_scheduler(config, optimizer)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_fit_start(self) -> None:
        check_trainer(self)
        self.method.context.device = self.device  # for methods that batch the splits themselves

    def on_train_epoch_start(self) -> None:
        self.method.on_epoch_start(self.model, self.current_epoch)
        if self.method.epoch_samples(self.current_epoch) is not None:
            raise ConfigError(
                f"method {self.config.method.name!r} re-samples its training data every epoch, which a Lightning "
                "DataLoader cannot follow; train it with erlmr train"
            )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        inputs, labels = unpack(batch)
        optimizer = cast(LightningOptimizer, self.optimizers())  # one: check_trainer refuses more
        optimizer.zero_grad(set_to_none=True)
        steps = self.trainer.num_training_batches
        step = LightningStepContext(
            self,
            optimizer,
            trainable_parameters(self.model, self.method),
            epoch=self.current_epoch,
            index=batch_idx,
            steps_per_epoch=int(steps) if steps != float("inf") else batch_idx + 1,
            grad_clip=self.config.optim.grad_clip,
        )
        with self.reduction_by_erlmr():
            result = method_step(self.method, self.model, inputs, labels, step)
            if not bool(torch.isfinite(result.loss)):
                raise TrainingDivergedError(
                    f"training diverged at epoch {self.current_epoch + 1}, step {batch_idx + 1}: the loss is NaN/Inf. "
                    "Lower optim.lr, set optim.grad_clip, or check the inputs"
                )
            step.finish()
        self.step_schedulers("step")
        self.log_step(result, labels)
        return result.loss

    def on_train_epoch_end(self) -> None:
        """The epoch-interval schedules, the replica check, then the method's epoch hook (erlmr's order)."""
        self.step_schedulers("epoch")
        cluster = Cluster(self.global_rank, self.trainer.world_size, self.device)
        check_replicas_agree(trainable_parameters(self.model, self.method), cluster, self.current_epoch)
        logs = self.method.on_epoch_end(self.model, self.current_epoch)
        if logs:
            self.log_dict({f"method/{k}": float(v) for k, v in logs.items()}, sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._tallies = {}

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        inputs, labels = unpack(batch)
        tally = self._tallies.setdefault(
            dataloader_idx, EvaluationTally(self.model.modalities, self.model.head.num_classes)
        )
        tally.add(self.model, self.method, inputs, labels)

    def on_validation_epoch_end(self) -> None:
        """The metrics of the validation batches of every rank: the tallies are summed first."""
        for index, tally in sorted(self._tallies.items()):
            sums = self.trainer.strategy.reduce(tally.sums.clone().to(self.device), reduce_op="sum")
            suffix = f"/dataloader_idx_{index}" if len(self._tallies) > 1 else ""
            self.log_dict(flat_metrics(tally.metrics(sums), "val_", suffix), sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # capture_rng keeps to tensors and plain tuples: Lightning's torch.load(weights_only=True) takes it
        checkpoint[RNG_KEY] = capture_rng(self.device.type == "cuda")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if RNG_KEY in checkpoint:
            restore_rng(checkpoint[RNG_KEY])

    # ------------------------------------------------------------------------------------ helpers
    def reduction_by_erlmr(self) -> AbstractContextManager:
        """Turn DDP's reduction in the backward pass off: erlmr's step context averages the gradients."""
        wrapper = self.trainer.strategy.model
        return wrapper.no_sync() if isinstance(wrapper, DistributedDataParallel) else nullcontext()

    def step_schedulers(self, interval: str) -> None:
        """Step the schedules of ``interval`` ("step" or "epoch"): manual optimisation leaves it to the module."""
        for config in self.trainer.lr_scheduler_configs:
            count = self.trainer.global_step if interval == "step" else self.current_epoch + 1
            scheduler: Any = config.scheduler  # ReduceLROnPlateau's step takes the monitored metric
            if config.interval == interval and count % config.frequency == 0:
                if config.monitor is None:
                    scheduler.step()
                else:
                    scheduler.step(self.trainer.callback_metrics[config.monitor])

    def log_step(self, result: StepResult, labels: torch.Tensor) -> None:
        """The epoch means of the training loss, accuracy and the method's logs, weighted by batch size."""
        size = len(labels)
        values = {
            "train_loss": result.loss,
            "train_accuracy": (result.output.logits.argmax(1) == labels).float().mean(),
        }
        values.update({f"method/{k}": v for k, v in result.logs.items()})
        self.log_dict(values, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)


def module_config(
    method: str,
    method_options: Mapping[str, Any] | None,
    model: Mapping[str, Any] | None,
    optim: Mapping[str, Any] | None,
    batch_size: int,
) -> Config:
    """The erlmr config the module is built from, validated as ``erlmr train`` validates its own."""
    return as_config(
        {
            "model": dict(model or {}),
            "method": {"name": method, "options": dict(method_options or {})},
            "optim": dict(optim or {}),
            "train": {"batch_size": batch_size},
        }
    )


def check_trainer(module: BalancedModule) -> None:
    """Refuse what the step context cannot work with: another wrapper than DDP, a loss scaler, an
    optimiser that is not one or leaves out some of the model's or the method's parameters."""
    wrapper = module.trainer.strategy.model
    if not isinstance(wrapper, (DistributedDataParallel, L.LightningModule)):
        raise ConfigError(
            f"BalancedModule reduces gradients itself and supports a single device or strategy='ddp'; "
            f"the strategy wraps the model in {type(wrapper).__name__}"
        )
    if getattr(module.trainer.precision_plugin, "scaler", None) is not None:
        raise ConfigError(
            "BalancedModule's methods combine gradients taken with autograd.grad, which a loss scaler does not "
            "scale; use precision='bf16-mixed' or '32-true' instead of '16-mixed'"
        )
    optimizers = module.trainer.optimizers
    if len(optimizers) != 1:
        raise ConfigError(f"BalancedModule trains with one optimiser; configure_optimizers gave {len(optimizers)}")
    covered = {id(p) for group in optimizers[0].param_groups for p in group["params"]}
    named = [
        *(f"model.{n}" for n, p in module.model.named_parameters() if p.requires_grad and id(p) not in covered),
        *(f"method.{n}" for n, p in module.method.named_parameters() if p.requires_grad and id(p) not in covered),
    ]
    if named:
        raise ConfigError(
            f"the optimiser leaves out trainable parameters {named[:5]}{' ...' if len(named) > 5 else ''}; "
            "give it self.parameters() (the model's and the method's)"
        )


def unpack(batch: Any) -> tuple[Mapping[str, torch.Tensor], torch.Tensor]:
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[0], Mapping)):
        raise DataError(
            f"BalancedModule takes batches of (dict of modality tensors, labels), got a {type(batch).__name__}; "
            "make the dataset yield (dict, label) pairs, or use erlmr.lightning.split_loader for an erlmr split"
        )
    return batch[0], batch[1]


def split_loader(split: Split, batch_size: int, shuffle: bool = False, **options: Any) -> DataLoader:
    """A DataLoader of ``(dict of modality tensors, labels)`` over an erlmr split: each batch is
    gathered in one indexing operation. ``options`` go to the DataLoader (``num_workers``...)."""
    # A Split is a map-style dataset without deriving from Dataset (DataLoader reads its __len__ and __getitems__).
    dataset = cast(Dataset, split)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate_batch, **options)
