"""The training loop: builds data, model and method from a config, trains, selects on val, tests once."""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Collection, Mapping

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import acceleration, ddp
from .checkpoint import atomic_write, load_checkpoint, save_checkpoint, write_json
from .config import Config, ModelConfig, from_dict, load_config, validate
from .data import DatasetSplits, Split, load_dataset
from .encoders import build_encoder, default_encoder_for
from .errors import ConfigError, TrainingDivergedError
from .euler import EulerRepresentation
from .fusion import FUSIONS
from .methods import Method, MethodContext, build_method, method_class
from .metrics import accuracy, macro_f1
from .model import MultiModalModel


@dataclass
class RunResult:
    run_dir: Path
    summary: dict


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


def build_model(config: ModelConfig, splits: DatasetSplits, use_euler: bool) -> MultiModalModel:
    shapes = splits.input_shapes()
    unknown = sorted((set(config.encoders) | set(config.encoder_options)) - set(splits.modalities))
    if unknown:
        raise ConfigError(f"model.encoders names unknown modalities {unknown}; this dataset has {splits.modalities}")
    encoders = {}
    for m in splits.modalities:
        name = config.encoders.get(m) or splits.default_encoders.get(m) or default_encoder_for(shapes[m])
        encoders[m] = build_encoder(name, shapes[m], config.encoder_options.get(m, {}))
    euler = None
    if use_euler:
        euler = EulerRepresentation(
            [encoders[m].output_shape for m in splits.modalities],
            config.euler_dim,
            config.euler_dropout,
            config.shared_projection,
        )
        widths = [2 * config.euler_dim] * len(splits.modalities)
    else:
        widths = [encoders[m].output_shape[0] for m in splits.modalities]
    head = FUSIONS.get(config.fusion)(widths, splits.num_classes, **config.fusion_options)
    return MultiModalModel(splits.modalities, encoders, head, euler, shapes)


def collate_batch(batch: Any) -> Any:
    """Batches come whole from ``Split.__getitems__``; nothing is left to collate."""
    return batch


def make_loader(
    split: Split, batch_size: int, shuffle: bool, seed: int, num_workers: int, pin: bool, rank: int = 0, world_size: int = 1
) -> DataLoader:
    """Batches of the in-memory split, each gathered in one indexing operation; ``batch_size`` is the
    global batch, of which this rank gets its share (see :class:`erlmr.ddp.ShardedBatchSampler`)."""
    batches = ddp.ShardedBatchSampler(len(split), batch_size, shuffle, seed, rank, world_size)
    return DataLoader(split, batch_sampler=batches, collate_fn=collate_batch, num_workers=num_workers, pin_memory=pin)


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
    for inputs, labels in make_loader(split, batch_size, False, 0, 0, False):
        inputs, labels = to_device(inputs, labels, device)
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


def gradients_finite(model: torch.nn.Module) -> bool:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return True
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())


def as_config(config: Config | Mapping | str | Path) -> Config:
    if isinstance(config, Config):
        validate(config)
        return config
    if isinstance(config, (str, Path)):
        return load_config(config)
    parsed = from_dict(Config, config)
    validate(parsed)
    return parsed


def make_run_dir(config: Config) -> Path:
    if config.train.run_dir:
        run_dir = Path(config.train.run_dir)
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        run_dir = Path(config.train.out) / f"{config.data.dataset}-{config.method.name}-seed{config.train.seed}-{stamp}"
    if (run_dir / "summary.json").exists():
        raise ConfigError(f"run folder {run_dir} already holds a finished run; choose another train.run_dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"cannot write the run folder {run_dir}: {error.strerror}; choose a writable train.out") from None
    return run_dir


class Trainer:
    """Runs one configured training job and writes its run folder."""

    def __init__(self, config: Config | Mapping | str | Path):
        self.config = as_config(config)
        cfg = self.config
        seed_everything(cfg.train.seed)
        self.cluster = ddp.join_from_env(resolve_device(cfg.train.device), cfg.train.batch_size)
        self.device = self.cluster.device
        self.amp = acceleration.resolve_amp(cfg.train.amp, self.device)
        self.splits = load_dataset(cfg.data.dataset, cfg.data.root, cfg.train.seed, cfg.data.val_fraction, cfg.data.options)
        cls = method_class(cfg.method.name)
        use_euler = cls.uses_euler if cfg.model.euler is None else cfg.model.euler
        self.model = build_model(cfg.model, self.splits, use_euler).to(self.device)
        context = MethodContext(
            modalities=self.splits.modalities,
            num_classes=self.splits.num_classes,
            epochs=cfg.train.epochs,
            batch_size=cfg.train.batch_size,
            device=self.device,
            splits=self.splits,
        )
        self.method = build_method(cfg.method.name, cfg.method.options, self.model, context)
        # The model training steps run through: DDP across ranks and/or compiled; self.model stays the bare one.
        self.step_model = acceleration.compiled(ddp.wrap_model(self.model, self.cluster), cfg.train.compile)
        self.optimizer = make_optimizer(cfg, self.model)
        self.method.optimizer = self.optimizer
        self.scheduler = make_scheduler(cfg, self.optimizer)

    def run(self) -> RunResult:
        if not self.cluster.is_main:
            return self.follow_main()
        cfg = self.config
        run_dir = make_run_dir(cfg)
        atomic_write(run_dir / "config.yaml", lambda f: f.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False)), mode="w")
        metrics_path = run_dir / "metrics.jsonl"
        metrics_path.write_text("")
        best_score, best_epoch = (-1.0, 0.0), -1
        for epoch in range(cfg.train.epochs):
            record = self.train_epoch(epoch, metrics_path)
            val = evaluate(self.model, self.method, self.splits.val, cfg.train.batch_size, self.device)
            record.update(
                val_accuracy=val["accuracy"],
                val_loss=val["loss"],
                val_macro_f1=val["macro_f1"],
                val_modality_accuracy=val["modality_accuracy"],
            )
            self.append_metrics(metrics_path, record)
            state = self.state(epoch)
            save_checkpoint(run_dir / "last.pt", state)
            # Higher val accuracy wins; on a tie (common on small val splits) the lower val loss does.
            score = (val["accuracy"], -val["loss"])
            if score > best_score:
                best_score, best_epoch = score, epoch
                save_checkpoint(run_dir / "best.pt", state)
        summary = self.finish(run_dir, best_epoch)
        return ddp.share_from_main(RunResult(run_dir, summary), self.cluster)

    def follow_main(self) -> RunResult:
        """A rank other than 0 only trains; rank 0 evaluates, writes the run folder and shares its result."""
        for epoch in range(self.config.train.epochs):
            self.train_epoch(epoch, None)
        return ddp.share_from_main(None, self.cluster)

    def train_epoch(self, epoch: int, metrics_path: Path | None) -> dict[str, Any]:
        cfg = self.config
        self.model.train()
        self.method.on_epoch_start(self.model, epoch)
        loader = make_loader(
            self.splits.train, cfg.train.batch_size, True, cfg.train.seed * 100_003 + epoch,
            cfg.train.num_workers, self.device.type == "cuda", self.cluster.rank, self.cluster.world_size,
        )
        started = time.perf_counter()
        total_loss, correct, seen = torch.zeros(()), 0, 0
        log_sums: dict[str, torch.Tensor] = {}
        quiet = cfg.train.quiet or not self.cluster.is_main
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", disable=quiet, leave=False)
        for step, (inputs, labels) in enumerate(bar):
            inputs, labels = to_device(inputs, labels, self.device)
            self.optimizer.zero_grad(set_to_none=True)
            with acceleration.autocast(self.device, self.amp):
                result = self.method.training_step(self.step_model, inputs, labels)
            self.method.modify_gradients(self.model, result, labels)
            if not torch.isfinite(result.loss) or not gradients_finite(self.model):
                self.append_metrics(metrics_path, {"epoch": epoch, "step": step, "error": "non-finite loss or gradient"})
                raise TrainingDivergedError(
                    f"training diverged at epoch {epoch + 1}, step {step + 1}: the loss or a gradient is NaN/Inf. "
                    "Lower optim.lr or check the inputs; the last good checkpoint is kept in the run folder"
                )
            if not self.method.steps_optimizer:
                self.optimizer.step()
            n = len(labels)
            total_loss += result.loss.detach().cpu() * n
            correct += int((result.output.logits.argmax(1) == labels).sum())
            seen += n
            for key, value in result.logs.items():
                log_sums[key] = log_sums.get(key, 0) + value.detach().cpu() * n
            if not quiet:
                bar.set_postfix(loss=f"{float(total_loss) / seen:.4f}", acc=f"{correct / seen:.3f}")
        if self.scheduler is not None:
            self.scheduler.step()
        ddp.check_replicas_agree(self.model, self.cluster, epoch)
        sums = ddp.sum_over_ranks({"loss": total_loss, "correct": correct, "seen": seen, **log_sums}, self.cluster)
        total_loss, correct, seen = sums.pop("loss"), sums.pop("correct"), sums.pop("seen")
        log_sums = sums
        record = {
            "epoch": epoch,
            "train_loss": float(total_loss) / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "lr": self.optimizer.param_groups[0]["lr"],
            "epoch_time_s": time.perf_counter() - started,
        }
        method_logs = {k: float(v) / max(seen, 1) for k, v in log_sums.items()}
        method_logs.update(self.method.on_epoch_end(self.model, epoch))
        if method_logs:
            record["method"] = method_logs
        if not quiet:
            tqdm.write(
                f"epoch {epoch + 1}/{cfg.train.epochs}  loss {record['train_loss']:.4f}  "
                f"train acc {record['train_accuracy']:.3f}"
            )
        return record

    def append_metrics(self, path: Path | None, record: dict) -> None:
        if path is None:  # a rank other than 0: it writes nothing
            return
        with path.open("a") as file:
            file.write(_json_line(record))

    def state(self, epoch: int) -> dict:
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "method": self.method.state_dict(),
            "config": self.config.to_dict(),
            "modalities": self.splits.modalities,
            "classes": self.splits.classes,
        }

    def finish(self, run_dir: Path, best_epoch: int) -> dict:
        cfg = self.config
        best = load_checkpoint(run_dir / "best.pt", self.device)
        self.model.load_state_dict(best["model"])
        self.method.load_state_dict(best["method"])
        val = evaluate(self.model, self.method, self.splits.val, cfg.train.batch_size, self.device)
        test = evaluate(self.model, self.method, self.splits.test, cfg.train.batch_size, self.device)
        summary = {
            "method": cfg.method.name,
            "dataset": cfg.data.dataset,
            "seed": cfg.train.seed,
            "best_epoch": best_epoch,
            "epochs": cfg.train.epochs,
            "modalities": self.splits.modalities,
            "classes": self.splits.classes,
            "val": {"accuracy": val["accuracy"], "macro_f1": val["macro_f1"], "modality_accuracy": val["modality_accuracy"]},
            "test": {"accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "modality_accuracy": test["modality_accuracy"]},
        }
        write_json(run_dir / "summary.json", summary)
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

    Under torchrun every rank returns rank 0's result (see :mod:`erlmr.ddp`)."""
    return Trainer(config).run()
