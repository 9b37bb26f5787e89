"""From raw media to a trained epoch: how fast ``erlmr data prepare`` decodes the AV-digits media demo
(videos in the CREMA-D layout) with one process and with one per core, and what the per-batch
augmentation (random resized crop + flip on the device) costs a training epoch.

Prepare: after one untimed warm-up (imports, file cache), each round decodes every clip into a fresh
cache (``visual_source=video``, and the audio from the WAVs as CREMA-D's loader does by default), once
with 1 process and once with ``--workers``; rounds alternate the order. Training: two trainers built
alike but for ``augment`` (the crema-d loader's default network, two ResNet-18) run the trainer's own
``train_epoch`` on the same ``--train-clips`` training clips, epoch after epoch, interleaved and
alternating which goes first, so that the load of a shared machine falls on both alike; short epochs
keep the two arms close in time. The report gives medians and the median of the per-round ratios.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/media_cost.py --width 16 --epochs 30 \
        --out benchmarks/results/media_cost.md

One torch thread, so that the one-process prepare is one core's work like each pool process (two
intra-op threads on a loaded machine spin and wait), and both training arms alike.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from step_cost import publish, report_header

from erlmr.data import load_dataset
from erlmr.data.avdigits_media import build_avdigits_media
from erlmr.training.trainer import Trainer


def prepare_seconds(root: Path, image_size: int, workers: int | None) -> float:
    cache = Path(tempfile.mkdtemp(prefix="media-cost-cache-"))
    try:
        started = time.perf_counter()
        load_dataset(
            "crema-d",
            str(root),
            0,
            0.1,
            {"image_size": image_size, "visual_source": "video", "cache_dir": str(cache), "workers": workers},
        )
        return time.perf_counter() - started
    finally:
        shutil.rmtree(cache)


def trainer(root: Path, image_size: int, batch_size: int, augment: bool, width: int | None, clips: int) -> Trainer:
    """A trainer of the crema-d default network whose epochs run over the first ``clips`` training clips."""
    encoder_options = {} if width is None else {m: {"width": width} for m in ("audio", "visual")}
    built = Trainer(
        {
            "data": {
                "dataset": "crema-d",
                "root": str(root),
                "options": {"image_size": image_size, "visual_source": "video", "augment": augment},
            },
            "model": {"encoder_options": encoder_options},
            "train": {"epochs": 1000, "batch_size": batch_size, "quiet": True, "device": "cpu", "seed": 0},
        }
    )
    built.splits.train = built.splits.train.subset(range(min(clips, len(built.splits.train))))
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=600, help="clips of the AV-digits media demo")
    parser.add_argument(
        "--data", help="an AV-digits media folder already built (default: build one in a temporary folder)"
    )
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--workers", type=int, default=2, help="processes of the parallel prepare")
    parser.add_argument("--prepare-rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15, help="timed epochs of each training arm")
    parser.add_argument("--train-clips", type=int, default=64, help="training clips per epoch")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--width", type=int, help="ResNet-18 base width (default: the encoder's, 64)")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="media-cost-"))
    try:
        if args.data:
            root, build_s = Path(args.data), None
        else:
            started = time.perf_counter()
            root = build_avdigits_media(
                scratch / "avdigits-media", clips=args.clips, workers=args.workers, progress=False
            )
            build_s = time.perf_counter() - started
        clips = sum(1 for name in ("train.csv", "test.csv") for line in (root / name).read_text().splitlines() if line)
        prepare: dict[int, list[float]] = {1: [], args.workers: []}
        prepare_seconds(root, args.image_size, args.workers)  # warm-up
        for round_index in range(args.prepare_rounds):
            for workers in [1, args.workers] if round_index % 2 == 0 else [args.workers, 1]:
                prepare[workers].append(prepare_seconds(root, args.image_size, workers))
        load_dataset("crema-d", str(root), 0, 0.1, {"image_size": args.image_size, "visual_source": "video"})
        arms = {
            augment: trainer(root, args.image_size, args.batch_size, augment, args.width, args.train_clips)
            for augment in (True, False)
        }
        epochs: dict[bool, list[float]] = {True: [], False: []}
        for epoch in range(args.epochs + 1):  # the first epoch of each arm warms up and is not counted
            for augment in (True, False) if epoch % 2 == 0 else (False, True):
                seconds = arms[augment].train_epoch(epoch, None)["epoch_time_s"]
                if epoch:
                    epochs[augment].append(seconds)
        samples = len(arms[True].splits.train)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    publish(report(args, argv, clips, build_s, prepare, epochs, samples), args.out)
    return 0


def report(args, argv, clips: int, build_s: float | None, prepare: dict, epochs: dict, samples: int) -> str:
    width = args.width or 64
    lines = report_header(
        "Raw media: prepare throughput and the augmentation's cost", torch.device("cpu"), "media_cost.py", argv
    ) + [
        f"AV-digits media demo: {clips} clips (2 s, 30 fps FLV1 160x120 + MP3; 16 kHz WAV)"
        + (f", built in {build_s:.0f} s with {args.workers} processes." if build_s is not None else "."),
        "",
        f"**Prepare** (`erlmr data prepare crema-d --set visual_source=video --set image_size={args.image_size}`; "
        f"decode + resize + spectrogram + cache write), {args.prepare_rounds} rounds:",
        "",
        "| processes | median s | clips / s |",
        "|---|---|---|",
    ]
    for workers, seconds in prepare.items():
        median = statistics.median(seconds)
        lines.append(f"| {workers} | {median:.1f} | {clips / median:.1f} |")
    speedup = statistics.median(prepare[1]) / statistics.median(prepare[args.workers])
    ratios = [a / b for a, b in zip(epochs[True], epochs[False])]
    lines += [
        "",
        f"{args.workers} processes decode {speedup:.2f}x as fast as one "
        f"({clips / statistics.median(prepare[args.workers]):.1f} clips/s).",
        "",
        f"**Training epoch**, augmentation on against off: crema-d's default encoders (ResNet-18, width {width}) for "
        f"audio and visual, image size {args.image_size}, batch {args.batch_size}, epochs of {samples} training clips, "
        f"{args.epochs} interleaved epochs per arm after one warm-up each:",
        "",
        "| augmentation | median epoch s |",
        "|---|---|",
        f"| on (random resized crop + flip per batch) | {statistics.median(epochs[True]):.2f} |",
        f"| off | {statistics.median(epochs[False]):.2f} |",
        "",
        f"Epoch time on / off: median of the per-round ratios **{statistics.median(ratios):.3f}** "
        f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
