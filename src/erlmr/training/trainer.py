"""The training loop: train on the train split, select the best epoch on validation, test once.

Everything a run is made of is built in :mod:`erlmr.training.builders`; its files are written through
:class:`~erlmr.training.run_folder.RunFolder`; a method reaches gradients and the optimiser only
through :class:`~erlmr.training.step.StepContext`. What is left here is the loop.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from tqdm import tqdm

from ..analysis.alarm import ImbalanceAlarm
from ..analysis.cost import PeakMemory, StepTimer, cost_report
from ..analysis.datacheck import check_data
from ..analysis.evaluation import evaluate, imbalance_report
from ..analysis.features import record_features
from ..analysis.metrics import confusion_matrix
from ..config import Config, parse_override
from ..data import Split, load_dataset
from ..errors import CheckpointError, ConfigError, TrainingDivergedError
from ..methods.base import StepResult
from . import acceleration
from .builders import (
    as_config,
    build_model,
    build_optimizer,
    build_scheduler,
    build_training_method,
    make_loader,
    model_spec,
    resolve_device,
    seed_everything,
    to_device,
    trainable_parameters,
)
from .distributed import (
    ShardedBatchSampler,
    broadcast_from_main,
    check_replicas_agree,
    join_from_env,
    share_from_main,
    sum_over_ranks,
    sync_batch_norm,
)
from .reload import restore_weights
from .run_folder import BEST, CHECKPOINT_FORMAT, LAST, RunFolder, read_checkpoint
from .runstate import (
    capture_rng,
    check_same_config,
    check_same_spec,
    config_fingerprint,
    restore_rng,
)
from .signals import StopSignals
from .step import StepContext
from .tensorboard import TensorBoardLogger

#: the config keys a resumed run may change: where it runs and how much it prints, not what it computes
RESUME_OVERRIDABLE = {"train.quiet", "train.device", "train.num_workers"}
#: called after every epoch with (epoch, record); it may raise to stop the run (a pruned trial, say)
EpochCallback = Callable[[int, dict], None]


@dataclass
class RunResult:
    run_dir: Path
    summary: dict


@dataclass
class EpochTotals:
    """Running sums of one epoch, saved with a mid-epoch checkpoint so that a resumed epoch logs the same."""

    loss: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    correct: int = 0
    seen: int = 0
    logs: dict[str, torch.Tensor] = field(default_factory=dict)

    def add(self, result: StepResult, labels: torch.Tensor) -> None:
        n = len(labels)
        self.loss += result.loss.detach().cpu() * n
        self.correct += int((result.output.logits.argmax(1) == labels).sum())
        self.seen += n
        for key, value in result.logs.items():
            self.logs[key] = self.logs.get(key, 0) + value.detach().cpu() * n

    @classmethod
    def restore(cls, saved: Mapping[str, Any]) -> "EpochTotals":
        return cls(saved["loss"].cpu(), saved["correct"], saved["seen"], {k: v.cpu() for k, v in saved["logs"].items()})


@dataclass
class Position:
    """Where training stands: the next epoch to train and the best validation score so far."""

    next_epoch: int = 0
    best_score: tuple[float, float] = (-1.0, 0.0)
    best_epoch: int = -1


class Trainer:
    """Runs one configured training job and writes its run folder; :meth:`resume` continues one.

    ``on_epoch(epoch, record)`` is called on rank 0 after every epoch's checkpoint is written.
    """

    def __init__(
        self, config: Config | Mapping | str | Path, on_epoch: EpochCallback | None = None, restoring: bool = False
    ):
        self.config = cfg = as_config(config)
        seed_everything(cfg.train.seed)
        self.cluster = join_from_env(resolve_device(cfg.train.device), cfg.train.batch_size)
        self.device = self.cluster.device
        self.amp = acceleration.resolve_amp(cfg.train.amp, self.device)
        self.splits = load_dataset(
            cfg.data.dataset, cfg.data.root, cfg.train.seed, cfg.data.val_fraction, cfg.data.options
        )
        check_batch_size(cfg, self.splits.train)
        self.spec = model_spec(cfg, self.splits)
        self._build_model_and_method(cfg, restoring)
        self._build_optimisation(cfg)
        self.step_timer = StepTimer(self.device)
        self.tensorboard = TensorBoardLogger() if cfg.train.tensorboard else None
        self.folder = RunFolder.for_config(cfg)
        self.position = Position()
        self.resumed = False
        self.mid_epoch_checkpoint: dict | None = None
        self.stop = StopSignals()
        self.on_epoch = on_epoch
        self.alarm = None
        if cfg.train.imbalance_alarm:
            probe = lambda: check_data(self.splits, cfg.data.normalize, cfg.train.seed)  # noqa: E731
            self.alarm = ImbalanceAlarm(self.splits, self.method.trained_modalities, probe)

    def _build_model_and_method(self, cfg: Config, restoring: bool) -> None:
        # A run restored from a checkpoint gets every weight from it, not from a pretrained file.
        model = build_model(cfg.model, self.spec, initial_weights=not restoring)
        if model.normalizer is not None and not restoring:  # train-split statistics; a checkpoint holds them
            model.normalizer.fit_split(self.splits.train, seed=cfg.train.seed)
        self.model = acceleration.memory_format(
            sync_batch_norm(model, self.cluster).to(self.device), cfg.train.channels_last
        )
        self.method = build_training_method(cfg, self.model, self.device, self.splits)
        broadcast_from_main([self.model, self.method], self.cluster)

    def _build_optimisation(self, cfg: Config) -> None:
        self.parameters = trainable_parameters(self.model, self.method)
        # The model training steps run through (compiled or not); self.model stays the bare one.
        self.step_model = acceleration.compile_step(self.model, self.method, cfg.train.compile)
        self.optimizer = build_optimizer(cfg, self.parameters)
        self.run_step = acceleration.step_runner(
            self.method,
            self.model,
            self.step_model,
            self.optimizer,
            self.parameters,
            cfg.train.cuda_graphs,
            self.device,
            self.cluster.world_size,
        )
        self.scheduler = build_scheduler(cfg, self.optimizer)

    # ------------------------------------------------------------------------------------ resuming
    @classmethod
    def resume(
        cls, run_dir: str | Path, overrides: Sequence[str] = (), on_epoch: EpochCallback | None = None
    ) -> "Trainer":
        """Rebuild the run of ``run_dir`` from its ``config.yaml`` and continue from its ``last.pt``.

        ``overrides`` may only change keys that do not change results (``train.quiet``, ``train.device``,
        ``train.num_workers``)."""
        changed = [".".join(parse_override(text)[0]) for text in overrides]
        refused = [key for key in changed if key not in RESUME_OVERRIDABLE]
        if refused:
            raise ConfigError(
                f"--resume continues the run with the config in its folder; {refused} would change its results. "
                f"Only {', '.join(sorted(RESUME_OVERRIDABLE))} may be given; to train differently, start a new run"
            )
        folder = RunFolder(run_dir)
        folder.check_resumable()
        config = folder.read_config([*overrides, f"train.run_dir={json.dumps(str(folder.path))}"])
        trainer = cls(config, on_epoch, restoring=True)
        trainer.load_resume_state(folder.path / LAST)
        return trainer

    def load_resume_state(self, path: Path) -> None:
        checkpoint = read_checkpoint(path, self.device)
        if "resume" not in checkpoint:
            raise CheckpointError(f"checkpoint {path} holds no training position; it cannot be resumed from")
        check_same_config(path, checkpoint, self.config.to_dict(), str(path.parent / "config.yaml"))
        check_same_spec(path, checkpoint, dataclasses.asdict(self.spec))
        position = checkpoint["resume"]
        self.position = Position(position["epoch"], tuple(position["best_score"]), position["best_epoch"])
        if position["step"]:
            # Applied once that epoch has started, so that on_epoch_start's side effects happen first.
            self.mid_epoch_checkpoint = checkpoint
        else:
            self.load_training_state(checkpoint, path)
        self.resumed = True

    def load_training_state(self, checkpoint: Mapping[str, Any], path: Path) -> None:
        restore_weights(path, checkpoint, self.model, self.method)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        restore_rng(checkpoint["resume"]["rng"])

    # ------------------------------------------------------------------------------------ the loop
    def run(self) -> RunResult:
        if not self.cluster.is_main:
            return self.follow_main()
        with self.folder.claim(3 * self.checkpoint_bytes(), resuming=self.resumed):  # one writer per run folder
            summary = self.train_and_test()
        return share_from_main(RunResult(self.folder.path, summary), self.cluster)

    def train_and_test(self) -> dict:
        """Train into the run folder (whose lock :meth:`run` holds), then test; the summary."""
        self.open_folder()
        self.peak_memory = PeakMemory(self.device)
        with self.stop:
            for epoch in range(self.position.next_epoch, self.config.train.epochs):
                record = self.train_epoch(epoch)
                record.update(self.validate())
                self.raise_alarms(epoch, record)
                self.log(record)
                self.save_epoch(epoch, (record["val_accuracy"], -record["val_loss"]))
                if self.on_epoch is not None:
                    self.on_epoch(epoch, record)
                if self.stop.received is not None:
                    raise self.stop.interrupted(self.folder.path, f"after epoch {epoch + 1}")
        return self.finish()

    def follow_main(self) -> RunResult:
        """A rank other than 0 only trains; rank 0 evaluates, writes the run folder and shares its result."""
        for epoch in range(self.position.next_epoch, self.config.train.epochs):
            self.train_epoch(epoch)
        return share_from_main(None, self.cluster)

    def open_folder(self) -> None:
        if not self.resumed:
            self.folder.write_config(self.config)
        self.folder.start_metrics(self.position.next_epoch if self.resumed else None)
        if self.resumed and self.alarm is not None:
            self.alarm.restore(self.folder.epoch_records())
        if self.tensorboard is not None:
            self.tensorboard.open(self.folder.path / "tensorboard")

    def checkpoint_bytes(self) -> int:
        """A generous estimate of one checkpoint: the weights plus two optimiser slots per parameter."""
        tensors = [*self.model.state_dict().values(), *self.method.state_dict().values()]
        weights = sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
        return 3 * weights + 2**20

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        totals, first_step = self.begin_epoch(epoch)
        started = time.perf_counter()
        bar = tqdm(
            self.batches(epoch, first_step),
            desc=f"epoch {epoch + 1}/{self.config.train.epochs}",
            disable=self.quiet,
            leave=False,
        )
        for index, (inputs, labels, samples) in enumerate(bar, start=first_step):
            inputs, labels = to_device(inputs, labels, self.device)
            if self.splits.augment is not None:  # the dataset's training-time crop/flip, drawn from (seed, epoch, step)
                inputs = self.splits.augment(inputs, self.config.train.seed, epoch, index)
            totals.add(self.train_step(epoch, index, inputs, labels, samples), labels)
            if not self.quiet:
                bar.set_postfix(
                    loss=f"{float(totals.loss) / totals.seen:.4f}", acc=f"{totals.correct / totals.seen:.3f}"
                )
            if self.stop.received is not None:
                self.folder.save_checkpoint(LAST, self.state(epoch, index + 1, totals))
                raise self.stop.interrupted(self.folder.path, f"at epoch {epoch + 1}, step {index + 1}")
        return self.end_epoch(epoch, totals, time.perf_counter() - started)

    @property
    def quiet(self) -> bool:
        return self.config.train.quiet or not self.cluster.is_main

    def begin_epoch(self, epoch: int) -> tuple[EpochTotals, int]:
        """Train mode and the method's epoch hook, then (resuming mid-epoch) the saved state and totals."""
        self.model.train()
        self.method.train()
        self.method.on_epoch_start(self.model, epoch)
        if self.mid_epoch_checkpoint is None:
            return EpochTotals(), 0
        checkpoint, self.mid_epoch_checkpoint = self.mid_epoch_checkpoint, None
        self.load_training_state(checkpoint, self.folder.path / LAST)
        return EpochTotals.restore(checkpoint["resume"]["totals"]), checkpoint["resume"]["step"]

    def batches(self, epoch: int, first_step: int):
        """The epoch's batches (with their sample indices), from the samples the method chose, if it did."""
        cfg = self.config.train
        samples = self.method.epoch_samples(epoch)
        loader = make_loader(
            self.splits.train,
            cfg.batch_size,
            True,
            cfg.seed * 100_003 + epoch,
            cfg.num_workers,
            self.device.type == "cuda",
            skip_batches=first_step,
            rank=self.cluster.rank,
            world_size=self.cluster.world_size,
            samples=samples,
            with_indices=True,
        )
        count = len(self.splits.train) if samples is None else len(samples)
        self.steps_in_epoch = len(ShardedBatchSampler(count, cfg.batch_size, True, 0))
        return loader

    def train_step(
        self, epoch: int, index: int, inputs: dict[str, torch.Tensor], labels: torch.Tensor, samples: torch.Tensor
    ) -> StepResult:
        """One batch: the method's step, gradients averaged and modulated, checked, then the update."""
        self.step_timer.start()
        self.optimizer.zero_grad(set_to_none=True)
        step = StepContext(
            self.optimizer, self.parameters, epoch, index, self.steps_in_epoch, self.config.optim.grad_clip, samples
        )
        try:
            with acceleration.autocast(self.device, self.amp, self.config.train.cuda_graphs):
                result = self.run_step(inputs, labels, step)
            finite = bool(torch.isfinite(result.loss)) and self.gradients_finite()
        except TrainingDivergedError:  # the method met a NaN/Inf itself, e.g. in gradients it combines
            finite = False
        if not finite:
            self.diverged(epoch, f"at epoch {epoch + 1}, step {index + 1}: the loss or a gradient is NaN/Inf", index)
        step.finish()
        self.step_timer.stop()
        return result

    def gradients_finite(self) -> bool:
        return all_finite([p.grad for p in self.parameters if p.grad is not None])

    def end_epoch(self, epoch: int, totals: EpochTotals, seconds: float) -> dict[str, Any]:
        """The scheduler's step, the replica check, and the epoch's record of training figures."""
        if self.scheduler is not None:
            self.scheduler.step()
        check_replicas_agree(self.parameters, self.cluster, epoch)
        sums = sum_over_ranks(
            {"loss": totals.loss, "correct": totals.correct, "seen": totals.seen, **totals.logs}, self.cluster
        )
        loss, correct, seen = sums.pop("loss"), sums.pop("correct"), max(sums.pop("seen"), 1)
        record = {
            "epoch": epoch,
            "train_loss": loss / seen,
            "train_accuracy": correct / seen,
            "lr": self.optimizer.param_groups[0]["lr"],
            "epoch_time_s": seconds,
            "step_time_s": self.step_timer.epoch_mean(),
        }
        method_logs = {k: v / seen for k, v in sums.items()}
        method_logs.update(self.method.on_epoch_end(self.model, epoch))
        if method_logs:
            record["method"] = method_logs
        if not self.quiet:
            tqdm.write(
                f"epoch {epoch + 1}/{self.config.train.epochs}  loss {record['train_loss']:.4f}  "
                f"train acc {record['train_accuracy']:.3f}"
            )
        return record

    def validate(self) -> dict[str, Any]:
        batch = self.config.train.batch_size
        val = evaluate(self.model, self.method, self.splits.val, batch, self.device)
        imbalance = imbalance_report(self.model, self.method, self.splits.val, batch, self.device)
        return {
            "val_accuracy": val["accuracy"],
            "val_loss": val["loss"],
            "val_macro_f1": val["macro_f1"],
            "val_modality_accuracy": val["modality_accuracy"],
            "val_contribution": imbalance["contribution"],
            "val_imbalance_degree": imbalance["imbalance_degree"],
        }

    def raise_alarms(self, epoch: int, record: dict) -> None:
        """Add the imbalance alarms this epoch raises to its record, and print them."""
        alarms = [] if self.alarm is None else self.alarm.update(epoch, record["val_modality_accuracy"])
        if alarms:
            record["alarms"] = alarms
        for alarm in alarms:
            tqdm.write(f"erlmr: warning: {alarm['message']}")

    def log(self, record: dict) -> None:
        self.folder.append_metrics(record)
        if self.tensorboard is not None and "error" not in record:
            self.tensorboard.log(record)

    def diverged(self, epoch: int, where: str, step: int | None = None) -> None:
        """Record the divergence in metrics.jsonl (rank 0) and stop with a message saying what is kept."""
        if self.cluster.is_main:
            error = {
                "epoch": epoch,
                "error": "non-finite loss or gradient" if step is not None else "non-finite parameters",
            }
            self.log(error if step is None else {**error, "step": step})
        kept = (
            "the last good checkpoint is kept in the run folder"
            if self.folder.has(LAST)
            else ("no checkpoint was written yet (it diverged in the first epoch)")
        )
        raise TrainingDivergedError(
            f"training diverged {where}. Lower optim.lr, set optim.grad_clip, or check the inputs; {kept}"
        )

    # ---------------------------------------------------------------------------------- checkpoints
    def save_epoch(self, epoch: int, val_score: tuple[float, float]) -> None:
        """Write best.pt (when validation improved) and then last.pt, the checkpoint a resume starts from;
        a model whose weights are no longer finite is never written over a good checkpoint."""
        if not all_finite([t for t in self.model.state_dict().values() if t.is_floating_point()]):
            self.diverged(epoch, f"in epoch {epoch + 1}: a weight became NaN/Inf")
        improved = val_score > self.position.best_score
        if improved:
            self.position.best_score, self.position.best_epoch = val_score, epoch
        state = self.state(epoch)
        if improved:
            self.folder.save_checkpoint(BEST, state)
        self.folder.save_checkpoint(LAST, state)

    def state(self, epoch: int, steps_done: int = 0, totals: EpochTotals | None = None) -> dict:
        """The checkpoint after the whole of ``epoch``, or after its first ``steps_done`` steps."""
        config = self.config.to_dict()
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "model": self.model.state_dict(),
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "config": config,
            "fingerprint": config_fingerprint(config),
            "modalities": self.splits.modalities,
            "classes": self.splits.classes,
            "spec": dataclasses.asdict(self.spec),
            "resume": {
                "epoch": epoch if steps_done else epoch + 1,
                "step": steps_done,
                "best_score": self.position.best_score,
                "best_epoch": self.position.best_epoch,
                "rng": capture_rng(self.device.type == "cuda"),
                "totals": None if totals is None else dataclasses.asdict(totals),
            },
        }

    # ------------------------------------------------------------------------------------ the end
    def finish(self) -> dict:
        """Test the best-validation checkpoint once and write ``summary.json``."""
        memory = self.peak_memory.measure()
        best = self.folder.load_checkpoint(BEST, self.device)
        restore_weights(self.folder.path / BEST, best, self.model, self.method)
        cfg = self.config
        summary = {
            "method": cfg.method.name,
            "dataset": cfg.data.dataset,
            "seed": cfg.train.seed,
            "best_epoch": self.position.best_epoch,
            "epochs": cfg.train.epochs,
            "modalities": self.splits.modalities,
            "classes": self.splits.classes,
            "data_options": cfg.data.options,
            "data_fingerprint": self.splits.fingerprint(),
            "method_options": cfg.method.options,
            "val": self.split_metrics(self.splits.val),
            "test": self.split_metrics(self.splits.test, with_confusion=True),
            "cost": cost_report(self.model, self.method, self.splits.train, self.device, self.step_timer, memory),
            "alarms": [] if self.alarm is None else list(self.alarm.raised.values()),
        }
        record_features(summary, self.model, self.method, self.splits, cfg.train, self.device, self.folder)
        self.folder.write_summary(summary)
        if self.tensorboard is not None:
            self.tensorboard.close()
        return summary

    def split_metrics(self, split: Split, with_confusion: bool = False) -> dict[str, Any]:
        batch = self.config.train.batch_size
        result = evaluate(self.model, self.method, split, batch, self.device)
        metrics = {
            "accuracy": result["accuracy"],
            "macro_f1": result["macro_f1"],
            "modality_accuracy": result["modality_accuracy"],
            **imbalance_report(self.model, self.method, split, batch, self.device),
        }
        if with_confusion:
            matrix = confusion_matrix(result["predictions"], result["labels"], self.splits.num_classes)
            metrics["confusion_matrix"] = matrix.tolist()
        return metrics


def check_batch_size(config: Config, train: Split) -> None:
    if config.train.batch_size > len(train):
        raise ConfigError(
            f"train.batch_size {config.train.batch_size} is larger than the train split ({len(train)} samples); "
            f"use at most {len(train)}"
        )


def all_finite(tensors: list[torch.Tensor]) -> bool:
    if not tensors:
        return True
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(tensors))).all())


def train(config: Config | Mapping | str | Path, on_epoch: EpochCallback | None = None) -> RunResult:
    """Train as configured and return the run folder and its summary (see README for the folder).

    Under torchrun every rank returns rank 0's result (see :mod:`erlmr.training.distributed`)."""
    return Trainer(config, on_epoch).run()


def resume(run_dir: str | Path, overrides: Sequence[str] = (), on_epoch: EpochCallback | None = None) -> RunResult:
    """Continue the run in ``run_dir`` from its last checkpoint; it ends as the uninterrupted run would."""
    return Trainer.resume(run_dir, overrides, on_epoch).run()
