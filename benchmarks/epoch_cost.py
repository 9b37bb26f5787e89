"""Does the data path keep the device busy at the field's scale? Full training epochs of a CREMA-D-sized
stand-in read from the memory-mapped cache, against the same epochs from tensors already on the device.

The stand-in has CREMA-D's training split (6,698 clips; OGM-GE's train.csv) with its real shapes and
the dtypes of erlmr's cache: a (1, 257, 188) float32 spectrogram and ``frames`` 224x224 RGB frames as
float16 (3, frames, 224, 224), seeded noise, written through :func:`erlmr.data.store.load_recipe` to
the same ``.npy`` cache a real CREMA-D build makes (3.3 GB for one frame, 7.3 GB for three). Every epoch
is :meth:`erlmr.training.trainer.Trainer.train_epoch` itself, two ResNet-18s, on the trainer's own
loader over the cache (``train.num_workers`` each count asked for, pinned memory on CUDA) or, for the
reference, on batches gathered from the split already resident on the device (the same batches in the
same order). Epochs are interleaved, one of each path per round, and each is divided by the resident
epoch of its round. "Busy" is the share of the epoch spent inside training steps as the trainer's
StepTimer counts them (it waits for the device at the end of each step): the rest is the loader's.

    PYTHONPATH=src python benchmarks/epoch_cost.py --out benchmarks/results/epoch_cost_cuda.md   # CUDA
    PYTHONPATH=src python benchmarks/epoch_cost.py --clips 64 --out ...                          # a CPU, a fraction

The page cache holds the files after they are written (as it does a real cache after its first epoch);
the first epoch after the page cache is dropped is reported apart where the platform allows it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from step_cost import publish, report_header

from erlmr.data.base import DATASETS
from erlmr.data.store import Recipe, Record, dataset_root, load_recipe
from erlmr.training.trainer import Trainer

CREMA_D_TRAIN = 6698
HELD_OUT = 8  # clips in each of val and test: the epoch is train alone
SPECTROGRAM = (1, 257, 188)


def standin_recipe(clips: int, frames: int) -> Recipe:
    """CREMA-D's layout (audio spectrogram, face frames, six classes) with seeded noise for content."""
    splits = ["train"] * clips + ["val"] * HELD_OUT + ["test"] * HELD_OUT
    records = [
        Record(f"clip{i:05d}", i % 6, split, f"clip{i:05d}", f"stand-in clip {i}") for i, split in enumerate(splits)
    ]

    def decode(record: Record) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(int(record.key[4:]))
        return {
            "audio": rng.standard_normal((1, *SPECTROGRAM), dtype=np.float32),
            "visual": rng.standard_normal((1, 3, frames, 224, 224), dtype=np.float32).astype(np.float16),
        }

    return Recipe(
        name="crema-d-standin",
        modalities=["audio", "visual"],
        classes=[str(c) for c in range(6)],
        records=records,
        decode=decode,
        settings={"clips": clips, "frames": frames},
        sources={s: "generated" for s in ("train", "val", "test")},
        default_encoders={"audio": "resnet18", "visual": "resnet18"},
    )


@DATASETS.register("crema-d-standin", "CREMA-D's shapes and split size, seeded noise (benchmarks/epoch_cost.py)")
def load_standin(
    root: str | None, seed: int = 0, val_fraction: float = 0.1, clips: int = CREMA_D_TRAIN, frames: int = 1
):
    folder = dataset_root(root, "crema-d-standin")
    return load_recipe(standin_recipe(clips, frames), folder, seed, val_fraction, cache=True, cache_dir=str(folder))


def drop_page_cache(folder: Path) -> bool:
    """Write the cache's files out and ask the kernel to forget their pages; False where it cannot."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for path in folder.rglob("*.npy"):
        with open(path, "rb") as file:
            os.fsync(file.fileno())
            os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return True


class ResidentTrainer(Trainer):
    """The same trainer, its batches gathered from the train split copied to the device once."""

    def __init__(self, config):
        super().__init__(config)
        train = self.splits.train
        rows = torch.arange(len(train)) if train.rows is None else train.rows
        self.resident = {m: x[rows].float().to(self.device) for m, x in train.inputs.items()}
        self.resident_labels = train.labels.to(self.device)

    def batches(self, epoch: int, first_step: int):
        loader = super().batches(epoch, first_step)  # the trainer's own batches, in its order
        for positions in loader.batch_sampler:
            index = torch.as_tensor(positions, dtype=torch.long)
            on_device = index.to(self.device)
            yield {m: x[on_device] for m, x in self.resident.items()}, self.resident_labels[on_device], index


def config_for(args, root: Path, workers: int, run_dir: Path) -> dict:
    return {
        "data": {
            "dataset": "crema-d-standin",
            "root": str(root),
            "options": {"clips": args.clips, "frames": args.frames},
        },
        "method": {"name": args.method},
        "train": {
            "batch_size": args.batch_size,
            "device": args.device,
            "num_workers": workers,
            "quiet": True,
            "epochs": args.epochs + 1,
            "imbalance_alarm": False,
            "amp": args.amp,
            "run_dir": str(run_dir),
            "channels_last": args.channels_last,
        },
    }


def timed_epoch(trainer: Trainer, epoch: int) -> dict:
    record = trainer.train_epoch(epoch)
    steps = trainer.steps_in_epoch
    busy = (record["step_time_s"] or 0.0) * steps / record["epoch_time_s"]
    return {"seconds": record["epoch_time_s"], "busy": busy, "samples": len(trainer.splits.train)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=CREMA_D_TRAIN, help="training clips (CREMA-D: 6698)")
    parser.add_argument("--frames", type=int, default=1, help="video frames per clip (1 or 3)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="timed rounds (one epoch of every path each)")
    parser.add_argument("--workers", default="0,2,4", help="comma-separated DataLoader worker counts to time")
    parser.add_argument(
        "--method", default="joint", help="the method trained (joint: the cheapest step, the loader's largest share)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast (default: on CUDA)"
    )
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--cache-dir", help="where to write the cache (default: a temporary folder, removed after)")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    args.argv = argv
    root = Path(args.cache_dir or tempfile.mkdtemp(prefix="erlmr-epoch-cost-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        report = run(args, root)
    finally:
        if not args.cache_dir:
            shutil.rmtree(root, ignore_errors=True)
    publish(report, args.out)
    return 0


def run(args, root: Path) -> str:
    started = time.perf_counter()
    load_standin(str(root), clips=args.clips, frames=args.frames)  # builds the cache once
    written = time.perf_counter() - started
    size = sum(p.stat().st_size for p in root.rglob("*.npy"))
    dropped = drop_page_cache(root)
    runs = Path(tempfile.mkdtemp(prefix="erlmr-epoch-runs-"))
    worker_counts = [int(w) for w in args.workers.split(",") if w]
    trainers = {f"cache, {w} workers": Trainer(config_for(args, root, w, runs / f"w{w}")) for w in worker_counts}
    first_label = next(iter(trainers))
    cold = timed_epoch(trainers[first_label], 0)  # the first epoch: from disk where the page cache was dropped
    trainers["device-resident"] = ResidentTrainer(config_for(args, root, 0, runs / "resident"))
    for label, trainer in trainers.items():
        if label != first_label:
            timed_epoch(trainer, 0)  # warm-up: cuDNN's algorithm search, the allocator, the workers' first fork
    results: dict[str, list[dict]] = {label: [] for label in trainers}
    for epoch in range(1, args.epochs + 1):
        for label, trainer in trainers.items():
            results[label].append(timed_epoch(trainer, epoch))
    device = trainers["device-resident"].device
    shutil.rmtree(runs, ignore_errors=True)
    return report_lines(args, device, results, cold, first_label, dropped, size, written)


def report_lines(args, device, results, cold, first_label, dropped, size, written) -> str:
    amp = args.amp if args.amp is not None else device.type == "cuda"
    fraction = "" if args.clips == CREMA_D_TRAIN else f" (a fraction: {args.clips} of CREMA-D's {CREMA_D_TRAIN})"
    lines = report_header(
        "Epoch from the memory-mapped cache against device-resident tensors",
        device,
        "epoch_cost.py",
        args.argv,
        f"bf16 autocast {'on' if amp else 'off'}{', channels-last' if args.channels_last else ''}",
    ) + [
        f"`{args.method}`, two ResNet-18s, {args.clips} training clips{fraction}, "
        f"{args.frames} frame(s) of 224x224 and a "
        f"(1, 257, 188) spectrogram, batch {args.batch_size}; cache {size / 2**30:.2f} GiB written in {written:.0f} s; "
        f"{args.epochs} timed rounds after one warm-up epoch per path.",
        "",
        "| path | median epoch s | samples/s | busy (steps / epoch) | "
        "epoch / device-resident epoch (median over rounds) |",
        "|---|---|---|---|---|",
    ]
    reference = [r["seconds"] for r in results["device-resident"]]
    for label, epochs in results.items():
        seconds = [r["seconds"] for r in epochs]
        ratio = statistics.median(a / b for a, b in zip(seconds, reference))
        median = statistics.median(seconds)
        busy = statistics.median(r["busy"] for r in epochs)
        lines.append(f"| {label} | {median:.2f} | {epochs[0]['samples'] / median:.0f} | {busy:.2f} | {ratio:.3f} |")
    where = (
        "after the page cache was dropped (read from disk)" if dropped else "(the page cache could not be dropped here)"
    )
    lines += [
        "",
        f"First epoch of `{first_label}` {where}, with the run's first-step warm-up: {cold['seconds']:.2f} s, "
        f"busy {cold['busy']:.2f}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
