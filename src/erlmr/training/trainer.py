"""The training loop: builds data, model and method from a config, trains, selects on val, tests once."""
from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import acceleration, ddp
from .checkpoint import atomic_write, load_checkpoint, save_checkpoint, write_json
from ..config import Config, ModelConfig, from_dict, load_config, parse_override, validate
from ..analysis.cost import PeakMemory, StepTimer, cost_report
from ..data import DatasetSplits, Split, load_dataset
from ..encoders import build_encoder, default_encoder_for
from ..errors import CheckpointError, ConfigError, TrainingDivergedError
from ..nn.euler import EulerRepresentation
from ..analysis.evaluation import batches, imbalance_report
from ..nn.fusion import FUSIONS
from ..methods import Method, MethodContext, build_method, method_class
from ..analysis.metrics import accuracy, confusion_matrix, macro_f1
from ..nn.model import MultiModalModel
from .runstate import (
    StopSignals, capture_rng, check_free_space, check_model_fits, check_same_config, check_same_spec,
    config_fingerprint, metrics_before, restore_rng,
)
from .tensorboard import TensorBoardLogger

CHECKPOINT_FORMAT = 1
#: the config keys a resumed run may change: where it runs and how much it prints, not what it computes
RESUME_OVERRIDABLE = {"train.quiet", "train.device", "train.num_workers"}


@dataclass
class RunResult:
    run_dir: Path
    summary: dict


@dataclass
class ModelSpec:
    """What building the model takes besides the config; fixed by the data and saved in every checkpoint,
    so that a trained model can be rebuilt without its dataset (:func:`erlmr.analysis.prediction.load_run`)."""

    modalities: list[str]
    input_shapes: dict[str, tuple[int, ...]]
    encoders: dict[str, str]
    num_classes: int
    euler: bool


@dataclass
class EpochTotals:
    """Running sums of one epoch, saved with a mid-epoch checkpoint so that a resumed epoch logs the same."""

    loss: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    correct: int = 0
    seen: int = 0
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {name!r} but no CUDA device is available; use 'cpu' or 'auto'")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device {name!r} is not a device; use 'auto', 'cpu' or 'cuda[:N]'") from None


def model_spec(config: ModelConfig, splits: DatasetSplits, use_euler: bool) -> ModelSpec:
    shapes = splits.input_shapes()
    unknown = sorted((set(config.encoders) | set(config.encoder_options)) - set(splits.modalities))
    if unknown:
        raise ConfigError(f"model.encoders names unknown modalities {unknown}; this dataset has {splits.modalities}")
    names = {
        m: config.encoders.get(m) or splits.default_encoders.get(m) or default_encoder_for(shapes[m])
        for m in splits.modalities
    }
    return ModelSpec(list(splits.modalities), shapes, names, splits.num_classes, use_euler)


def build_model_from_spec(config: ModelConfig, spec: ModelSpec) -> MultiModalModel:
    shapes = spec.input_shapes
    encoders = {m: build_encoder(spec.encoders[m], shapes[m], config.encoder_options.get(m, {})) for m in spec.modalities}
    euler = None
    if spec.euler:
        euler = EulerRepresentation(
            [encoders[m].output_shape for m in spec.modalities],
            config.euler_dim,
            config.euler_dropout,
            config.shared_projection,
        )
        widths = [2 * config.euler_dim] * len(spec.modalities)
    else:
        widths = [encoders[m].output_shape[0] for m in spec.modalities]
    head = FUSIONS.get(config.fusion)(widths, spec.num_classes, **config.fusion_options)
    return MultiModalModel(spec.modalities, encoders, head, euler, shapes)


def build_model(config: ModelConfig, splits: DatasetSplits, use_euler: bool) -> MultiModalModel:
    return build_model_from_spec(config, model_spec(config, splits, use_euler))


def make_method(config: Config, model: MultiModalModel, device: torch.device, splits: DatasetSplits | None) -> Method:
    context = MethodContext(
        modalities=model.modalities,
        num_classes=model.head.num_classes,
        epochs=config.train.epochs,
        batch_size=config.train.batch_size,
        device=device,
        splits=splits,
    )
    return build_method(config.method.name, config.method.options, model, context)


def collate_batch(batch: Any) -> Any:
    """Batches come whole from ``Split.__getitems__``; nothing is left to collate."""
    return batch


def make_loader(
    split: Split, batch_size: int, shuffle: bool, seed: int, num_workers: int, pin: bool, skip_batches: int = 0,
    rank: int = 0, world_size: int = 1,
) -> DataLoader:
    """Batches in an order that depends on ``seed`` alone (not on the global RNG, which it leaves
    untouched), so that a resumed epoch sees the same batches; the first ``skip_batches`` are left out.
    Each batch is gathered from the in-memory split in one indexing operation; ``batch_size`` is the
    global batch, of which this rank gets its share (see :class:`erlmr.training.ddp.ShardedBatchSampler`)."""
    batches = ddp.ShardedBatchSampler(len(split), batch_size, shuffle, seed, rank, world_size)
    if skip_batches:
        batches = list(batches)[skip_batches:]
    return DataLoader(
        split, batch_sampler=batches, collate_fn=collate_batch, num_workers=num_workers, pin_memory=pin,
        generator=torch.Generator().manual_seed(seed),
    )


def to_device(inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, device: torch.device):
    non_blocking = device.type == "cuda"
    return {m: x.to(device, non_blocking=non_blocking) for m, x in inputs.items()}, labels.to(device, non_blocking=non_blocking)


@torch.no_grad()
def evaluate(
    model: MultiModalModel,
    method: Method,
    split: Split,
    batch_size: int,
    device: torch.device,
    absent: Collection[str] = (),
) -> dict[str, Any]:
    """Fused accuracy and macro-F1, and each present modality's accuracy from its own logits."""
    model.eval()
    fused, per_modality, labels_all = [], {m: [] for m in model.modalities if m not in absent}, []
    total_loss = 0.0
    for inputs, labels in batches(split, batch_size, device):
        output = method.predict(model, inputs, absent)
        total_loss += float(F.cross_entropy(output.logits, labels, reduction="sum"))
        fused.append(output.logits.argmax(1).cpu())
        for m in per_modality:
            per_modality[m].append(output.modality_logits[m].argmax(1).cpu())
        labels_all.append(labels.cpu())
    predictions, labels = torch.cat(fused), torch.cat(labels_all)
    return {
        "accuracy": accuracy(predictions, labels),
        "loss": total_loss / max(len(labels), 1),
        "macro_f1": macro_f1(predictions, labels, model.head.num_classes),
        "modality_accuracy": {m: accuracy(torch.cat(p), labels) for m, p in per_modality.items()},
        "predictions": predictions,
        "labels": labels,
    }


def make_optimizer(config: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    o = config.optim
    params = [p for p in model.parameters() if p.requires_grad]
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    optimizer = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
    return optimizer(params, lr=o.lr, weight_decay=o.weight_decay)


def make_scheduler(config: Config, optimizer: torch.optim.Optimizer):
    o = config.optim
    if o.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, o.step_size, o.gamma)
    if o.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.train.epochs)
    return None


def all_finite(tensors: list[torch.Tensor]) -> bool:
    if not tensors:
        return True
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(tensors))).all())


def gradients_finite(model: torch.nn.Module) -> bool:
    return all_finite([p.grad for p in model.parameters() if p.grad is not None])


def as_config(config: Config | Mapping | str | Path) -> Config:
    if isinstance(config, Config):
        validate(config)
        return config
    if isinstance(config, (str, Path)):
        return load_config(config)
    parsed = from_dict(Config, config)
    validate(parsed)
    return parsed


def existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def make_run_dir(config: Config, needed_bytes: int = 0, resuming: bool = False) -> Path:
    """Create (or, resuming, reuse) the run folder after checking that it is writable and has room."""
    if config.train.run_dir:
        run_dir = Path(config.train.run_dir)
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        run_dir = Path(config.train.out) / f"{config.data.dataset}-{config.method.name}-seed{config.train.seed}-{stamp}"
    if (run_dir / "summary.json").exists():
        raise ConfigError(f"run folder {run_dir} already holds a finished run; choose another train.run_dir")
    if not resuming and (run_dir / "last.pt").exists():
        raise ConfigError(
            f"run folder {run_dir} holds an unfinished run; continue it with: erlmr train --resume {run_dir} "
            "(or choose another train.run_dir)"
        )
    check_free_space(existing_ancestor(run_dir), needed_bytes)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"cannot write the run folder {run_dir}: {error.strerror}; choose a writable train.out") from None
    return run_dir


class Trainer:
    """Runs one configured training job and writes its run folder; :meth:`resume` continues one.

    The run folder holds ``config.yaml`` (first), ``metrics.jsonl`` (a line per epoch), ``best.pt`` and
    ``last.pt`` (every epoch, and ``last.pt`` also when SIGINT/SIGTERM stops training mid-epoch) and,
    only once the run has completed, ``summary.json`` (last).
    """

    def __init__(self, config: Config | Mapping | str | Path):
        self.config = as_config(config)
        cfg = self.config
        seed_everything(cfg.train.seed)
        self.cluster = ddp.join_from_env(resolve_device(cfg.train.device), cfg.train.batch_size)
        self.device = self.cluster.device
        self.amp = acceleration.resolve_amp(cfg.train.amp, self.device)
        self.splits = load_dataset(cfg.data.dataset, cfg.data.root, cfg.train.seed, cfg.data.val_fraction, cfg.data.options)
        if cfg.train.batch_size > len(self.splits.train):
            raise ConfigError(
                f"train.batch_size {cfg.train.batch_size} is larger than the train split ({len(self.splits.train)} "
                f"samples); use at most {len(self.splits.train)}"
            )
        cls = method_class(cfg.method.name)
        use_euler = cls.uses_euler if cfg.model.euler is None else cfg.model.euler
        self.spec = model_spec(cfg.model, self.splits, use_euler)
        self.model = build_model_from_spec(cfg.model, self.spec).to(self.device)
        self.method = make_method(cfg, self.model, self.device, self.splits)
        self.model.to(self.device)  # the modules a method added (an extra head, say) join the model's device
        # The model training steps run through: DDP across ranks and/or compiled; self.model stays the bare one.
        self.step_model = acceleration.compiled(ddp.wrap_model(self.model, self.cluster), cfg.train.compile)
        self.optimizer = make_optimizer(cfg, self.model)
        self.method.optimizer = self.optimizer
        self.gradient_sync = ddp.GradientSync(
            self.method.gradient_sync_mode(), self.model, self.optimizer, self.method.steps_optimizer, self.cluster
        )
        self.scheduler = make_scheduler(cfg, self.optimizer)
        self.step_timer = StepTimer(self.device)
        self.tensorboard = TensorBoardLogger() if cfg.train.tensorboard else None
        self.next_epoch = 0
        self.best_score, self.best_epoch = (-1.0, 0.0), -1
        self.resumed = False
        self.mid_epoch_checkpoint: dict | None = None
        self.stop = StopSignals()

    @classmethod
    def resume(cls, run_dir: str | Path, overrides: Sequence[str] = ()) -> "Trainer":
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
        run_dir = Path(run_dir)
        config_path = run_dir / "config.yaml"
        if not config_path.is_file():
            raise CheckpointError(f"{run_dir} is not a run folder (it has no config.yaml); pass the folder of a training run")
        if (run_dir / "summary.json").exists():
            raise ConfigError(f"run {run_dir} has already completed (it has a summary.json); there is nothing to resume")
        if not (run_dir / "last.pt").exists():
            raise CheckpointError(
                f"run {run_dir} has no last.pt: it stopped before its first checkpoint, so there is nothing to resume; "
                "train it again with the same command"
            )
        trainer = cls(load_config(config_path, [*overrides, f"train.run_dir={json.dumps(str(run_dir))}"]))
        trainer.load_resume_state(run_dir / "last.pt")
        return trainer

    def load_resume_state(self, path: Path) -> None:
        checkpoint = load_checkpoint(path, self.device)
        if "resume" not in checkpoint:
            raise CheckpointError(f"checkpoint {path} holds no training position; it cannot be resumed from")
        check_same_config(path, checkpoint, self.config.to_dict(), str(path.parent / "config.yaml"))
        check_same_spec(path, checkpoint, dataclasses.asdict(self.spec))
        check_model_fits(path, checkpoint["model"], self.model)
        position = checkpoint["resume"]
        self.next_epoch = position["epoch"]
        self.best_score, self.best_epoch = tuple(position["best_score"]), position["best_epoch"]
        if position["step"]:
            # Applied once that epoch has started, so that on_epoch_start's side effects happen first.
            self.mid_epoch_checkpoint = checkpoint
        else:
            self.load_training_state(checkpoint)
        self.resumed = True

    def load_training_state(self, checkpoint: Mapping[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.method.load_state_dict(checkpoint["method"])
        restore_rng(checkpoint["resume"]["rng"])

    def checkpoint_bytes(self) -> int:
        """A generous estimate of one checkpoint: the weights plus two optimiser slots per parameter."""
        weights = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
        return 3 * weights + 2**20

    def run(self) -> RunResult:
        if not self.cluster.is_main:
            return self.follow_main()
        cfg = self.config
        run_dir = make_run_dir(cfg, 3 * self.checkpoint_bytes(), resuming=self.resumed)
        metrics_path = run_dir / "metrics.jsonl"
        if self.resumed:
            kept = metrics_before(metrics_path, self.next_epoch)
        else:
            atomic_write(run_dir / "config.yaml", lambda f: f.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False)), mode="w")
            kept = ""
        atomic_write(metrics_path, lambda f: f.write(kept), mode="w")
        if self.tensorboard is not None:
            self.tensorboard.open(run_dir / "tensorboard")
        self.peak_memory = PeakMemory(self.device)
        with self.stop:
            for epoch in range(self.next_epoch, cfg.train.epochs):
                record = self.train_epoch(epoch, metrics_path)
                val = evaluate(self.model, self.method, self.splits.val, cfg.train.batch_size, self.device)
                imbalance = imbalance_report(self.model, self.method, self.splits.val, cfg.train.batch_size, self.device)
                record.update(
                    val_accuracy=val["accuracy"],
                    val_loss=val["loss"],
                    val_macro_f1=val["macro_f1"],
                    val_modality_accuracy=val["modality_accuracy"],
                    val_contribution=imbalance["contribution"],
                    val_imbalance_degree=imbalance["imbalance_degree"],
                )
                self.append_metrics(metrics_path, record)
                # Higher val accuracy wins; on a tie (common on small val splits) the lower val loss does.
                self.save_epoch(epoch, (val["accuracy"], -val["loss"]), metrics_path)
                if self.stop.received is not None:
                    raise self.stop.interrupted(run_dir, f"after epoch {epoch + 1}")
        summary = self.finish(run_dir, self.best_epoch)
        return ddp.share_from_main(RunResult(run_dir, summary), self.cluster)

    def follow_main(self) -> RunResult:
        """A rank other than 0 only trains; rank 0 evaluates, writes the run folder and shares its result."""
        for epoch in range(self.next_epoch, self.config.train.epochs):
            self.train_epoch(epoch, None)
        return ddp.share_from_main(None, self.cluster)

    def save_epoch(self, epoch: int, val_score: tuple[float, float], metrics_path: Path) -> None:
        """Write best.pt (when validation improved) and then last.pt, the checkpoint a resume starts from;
        a model whose weights are no longer finite is never written over a good checkpoint."""
        if not all_finite([t for t in self.model.state_dict().values() if t.is_floating_point()]):
            self.append_metrics(metrics_path, {"epoch": epoch, "error": "non-finite parameters"})
            raise TrainingDivergedError(
                f"training diverged in epoch {epoch + 1}: a weight became NaN/Inf. Lower optim.lr or check the "
                "inputs; the last good checkpoint is kept in the run folder"
            )
        improved = val_score > self.best_score
        if improved:
            self.best_score, self.best_epoch = val_score, epoch
        state = self.state(epoch)
        if improved:
            self.save(metrics_path.parent / "best.pt", state)
        self.save(metrics_path.parent / "last.pt", state)

    def save(self, path: Path, state: dict) -> None:
        try:
            save_checkpoint(path, state)
        except OSError as error:
            raise self.write_failed(path, error) from None

    def write_failed(self, path: Path, error: OSError) -> CheckpointError:
        return CheckpointError(
            f"could not write {path}: {error.strerror or error}; the files already in {path.parent} are unchanged. "
            f"Free some space (or fix its permissions), then continue with: erlmr train --resume {path.parent}"
        )

    def train_epoch(self, epoch: int, metrics_path: Path | None) -> dict[str, Any]:
        cfg = self.config
        self.model.train()
        self.method.on_epoch_start(self.model, epoch)
        totals, first_step = EpochTotals(), 0
        if self.mid_epoch_checkpoint is not None:
            totals, first_step = self.restore_mid_epoch()
        loader = make_loader(
            self.splits.train, cfg.train.batch_size, True, cfg.train.seed * 100_003 + epoch,
            cfg.train.num_workers, self.device.type == "cuda", skip_batches=first_step,
            rank=self.cluster.rank, world_size=self.cluster.world_size,
        )
        started = time.perf_counter()
        quiet = cfg.train.quiet or not self.cluster.is_main
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", disable=quiet, leave=False)
        for step, (inputs, labels) in enumerate(bar, start=first_step):
            self.step_timer.start()
            inputs, labels = to_device(inputs, labels, self.device)
            if self.splits.augment is not None:  # the dataset's training-time crop/flip, drawn from (seed, epoch, step)
                inputs = self.splits.augment(inputs, cfg.train.seed, epoch, step)
            self.optimizer.zero_grad(set_to_none=True)
            try:
                with self.gradient_sync.step(self.step_model), acceleration.autocast(self.device, self.amp):
                    result = self.method.training_step(self.step_model, inputs, labels)
                self.method.modify_gradients(self.model, result, labels)
                finite = bool(torch.isfinite(result.loss)) and gradients_finite(self.model)
            except TrainingDivergedError:  # the method met a NaN/Inf itself, e.g. in gradients it combines
                finite = False
            if not finite:
                self.append_metrics(metrics_path, {"epoch": epoch, "step": step, "error": "non-finite loss or gradient"})
                raise TrainingDivergedError(
                    f"training diverged at epoch {epoch + 1}, step {step + 1}: the loss or a gradient is NaN/Inf. "
                    "Lower optim.lr or check the inputs; the last good checkpoint is kept in the run folder"
                )
            if not self.method.steps_optimizer:
                self.optimizer.step()
            self.step_timer.stop()
            n = len(labels)
            totals.loss += result.loss.detach().cpu() * n
            totals.correct += int((result.output.logits.argmax(1) == labels).sum())
            totals.seen += n
            for key, value in result.logs.items():
                totals.logs[key] = totals.logs.get(key, 0) + value.detach().cpu() * n
            if not quiet:
                bar.set_postfix(loss=f"{float(totals.loss) / totals.seen:.4f}", acc=f"{totals.correct / totals.seen:.3f}")
            if self.stop.received is not None:
                self.save(metrics_path.parent / "last.pt", self.state(epoch, step + 1, totals))
                raise self.stop.interrupted(metrics_path.parent, f"at epoch {epoch + 1}, step {step + 1}")
        if self.scheduler is not None:
            self.scheduler.step()
        ddp.check_replicas_agree(self.model, self.cluster, epoch)
        sums = ddp.sum_over_ranks({"loss": totals.loss, "correct": totals.correct, "seen": totals.seen, **totals.logs}, self.cluster)
        loss, correct, seen = sums.pop("loss"), sums.pop("correct"), sums.pop("seen")
        record = {
            "epoch": epoch,
            "train_loss": loss / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "lr": self.optimizer.param_groups[0]["lr"],
            "epoch_time_s": time.perf_counter() - started,
            "step_time_s": self.step_timer.epoch_mean(),
        }
        method_logs = {k: v / max(seen, 1) for k, v in sums.items()}
        method_logs.update(self.method.on_epoch_end(self.model, epoch))
        if method_logs:
            record["method"] = method_logs
        if not quiet:
            tqdm.write(
                f"epoch {epoch + 1}/{cfg.train.epochs}  loss {record['train_loss']:.4f}  "
                f"train acc {record['train_accuracy']:.3f}"
            )
        return record

    def restore_mid_epoch(self) -> tuple[EpochTotals, int]:
        checkpoint, self.mid_epoch_checkpoint = self.mid_epoch_checkpoint, None
        self.load_training_state(checkpoint)
        saved = checkpoint["resume"]["totals"]
        totals = EpochTotals(
            saved["loss"].cpu(), saved["correct"], saved["seen"], {k: v.cpu() for k, v in saved["logs"].items()}
        )
        return totals, checkpoint["resume"]["step"]

    def append_metrics(self, path: Path | None, record: dict) -> None:
        if path is None:  # a rank other than 0: it writes nothing
            return
        try:
            with path.open("a") as file:
                file.write(_json_line(record))
        except OSError as error:
            raise self.write_failed(path, error) from None
        if self.tensorboard is not None and "error" not in record:
            self.tensorboard.log(record)

    def state(self, epoch: int, steps_done: int = 0, totals: EpochTotals | None = None) -> dict:
        """The checkpoint after the whole of ``epoch``, or after its first ``steps_done`` steps."""
        config = self.config.to_dict()
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "method": self.method.state_dict(),
            "config": config,
            "fingerprint": config_fingerprint(config),
            "modalities": self.splits.modalities,
            "classes": self.splits.classes,
            "spec": dataclasses.asdict(self.spec),
            "resume": {
                "epoch": epoch if steps_done else epoch + 1,
                "step": steps_done,
                "best_score": self.best_score,
                "best_epoch": self.best_epoch,
                "rng": capture_rng(self.device.type == "cuda"),
                "totals": None if totals is None else dataclasses.asdict(totals),
            },
        }

    def finish(self, run_dir: Path, best_epoch: int) -> dict:
        cfg = self.config
        memory = self.peak_memory.measure()
        best = load_checkpoint(run_dir / "best.pt", self.device)
        self.model.load_state_dict(best["model"])
        self.method.load_state_dict(best["method"])
        val = evaluate(self.model, self.method, self.splits.val, cfg.train.batch_size, self.device)
        test = evaluate(self.model, self.method, self.splits.test, cfg.train.batch_size, self.device)
        val_imbalance, test_imbalance = (
            imbalance_report(self.model, self.method, split, cfg.train.batch_size, self.device)
            for split in (self.splits.val, self.splits.test)
        )
        summary = {
            "method": cfg.method.name,
            "dataset": cfg.data.dataset,
            "seed": cfg.train.seed,
            "best_epoch": best_epoch,
            "epochs": cfg.train.epochs,
            "modalities": self.splits.modalities,
            "classes": self.splits.classes,
            "data_options": cfg.data.options,
            "method_options": cfg.method.options,
            "val": {
                "accuracy": val["accuracy"], "macro_f1": val["macro_f1"], "modality_accuracy": val["modality_accuracy"],
                **val_imbalance,
            },
            "test": {
                "accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "modality_accuracy": test["modality_accuracy"],
                **test_imbalance,
                "confusion_matrix": confusion_matrix(test["predictions"], test["labels"], self.splits.num_classes).tolist(),
            },
            "cost": cost_report(self.model, self.method, self.splits.train, self.device, self.step_timer, memory),
        }
        write_json(run_dir / "summary.json", summary)
        if self.tensorboard is not None:
            self.tensorboard.close()
        return summary


def _json_line(record: dict) -> str:
    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    return json.dumps(clean(record)) + "\n"


def train(config: Config | Mapping | str | Path) -> RunResult:
    """Train as configured and return the run folder and its summary (see README for the folder).

    Under torchrun every rank returns rank 0's result (see :mod:`erlmr.training.ddp`)."""
    return Trainer(config).run()


def resume(run_dir: str | Path, overrides: Sequence[str] = ()) -> RunResult:
    """Continue the run in ``run_dir`` from its last checkpoint; it ends as the uninterrupted run would."""
    return Trainer.resume(run_dir, overrides).run()
