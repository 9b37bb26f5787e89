"""Is data loading ever the bottleneck? An epoch through the trainer's real loader against the same epoch
sliced straight from in-memory tensors.

Both epochs run the same training steps (``joint`` on the avdigits default network, the cheapest step,
so the loader's share is as large as it gets) over the same seeded batches. The real path is
``erlmr.training.builders.make_loader`` + ``to_device``, with pinned memory on CUDA, for each worker count asked
for; the in-memory path indexes tensors that already sit on the device. Epochs are interleaved and
each real epoch is divided by the in-memory epoch of the same round; the report gives medians.

    PYTHONPATH=src python benchmarks/loader_cost.py --out benchmarks/results/loader_cost.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from step_cost import (
    Entry,
    build,
    publish,
    registered,
    report_header,
    synchronize,
    synthetic_splits,
    train_step,
    workloads,
)

from erlmr.training.builders import make_loader, resolve_device, to_device


def loader_epoch(entry: Entry, split, batch_size: int, seed: int, workers: int, device: torch.device) -> float:
    started = time.perf_counter()
    for inputs, labels in make_loader(split, batch_size, True, seed, workers, device.type == "cuda"):
        train_step(entry, *to_device(inputs, labels, device), False)
    synchronize(device)
    return time.perf_counter() - started


def memory_epoch(entry: Entry, resident, batch_size: int, seed: int) -> float:
    inputs, labels = resident
    device = labels.device
    started = time.perf_counter()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).to(device)
    for index in order.split(batch_size):
        if len(index) > 1:
            train_step(entry, {m: x[index] for m, x in inputs.items()}, labels[index], False)
    synchronize(device)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--samples", type=int, default=1600, help="training samples per epoch (avdigits has about 1600)"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5, help="timed rounds (one epoch of each path per round)")
    parser.add_argument("--workers", default="0,2", help="comma-separated DataLoader worker counts to time")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    workload = workloads()["avdigits"]
    split = synthetic_splits(workload, args.samples, 0).train
    resident = ({m: x.to(device) for m, x in split.inputs.items()}, split.labels.to(device))
    entry = Entry("joint", False, registered("joint"))
    build(entry, workload, synthetic_splits(workload, 4 * args.batch_size, 0), device, 0)
    worker_counts = [int(w) for w in args.workers.split(",") if w]
    memory_epoch(entry, resident, args.batch_size, seed=999)  # warm-up
    times: dict[str, list[float]] = {"in-memory": [], **{f"loader, {w} workers": [] for w in worker_counts}}
    for round_index in range(args.epochs):
        seed = 1000 + round_index
        times["in-memory"].append(memory_epoch(entry, resident, args.batch_size, seed))
        for workers in worker_counts:
            times[f"loader, {workers} workers"].append(
                loader_epoch(entry, split, args.batch_size, seed, workers, device)
            )
    lines = report_header("Data loading: real loader against in-memory tensors", device, "loader_cost.py", argv) + [
        f"`joint` on the avdigits default network, {args.samples} samples, batch {args.batch_size}, "
        f"{args.epochs} rounds.",
        "",
        "| path | median epoch s | epoch / in-memory epoch (median over rounds) |",
        "|---|---|---|",
    ]
    for label, epochs in times.items():
        ratio = statistics.median(a / b for a, b in zip(epochs, times["in-memory"]))
        lines.append(f"| {label} | {statistics.median(epochs):.2f} | {ratio:.3f} |")
    publish("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
