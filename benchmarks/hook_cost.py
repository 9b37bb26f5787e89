"""What the epoch hooks of the methods that work between epochs cost, relative to one training epoch.

Per-step cost is benchmarks/step_cost.py's; some methods do their work once per epoch instead: the
valuation of ``sample_valuation`` (an eval pass with 2^M − 1 head evaluations per batch), the
diagnosis of ``relearning`` (eval passes over train + val and 2·M k-means fits) and the hyper-step of
``lfm``'s learnable schedule (a double backward on its held-out samples). Each round times one epoch
of plain ``joint`` steps over the train split and then each hook once, in a shuffled order, so the
ratios (hook time / that round's epoch time) cancel the load of a shared machine; the table reports
their medians.

    PYTHONPATH=src python benchmarks/hook_cost.py --out benchmarks/results/hook_cost.md
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from step_cost import publish, report_header

from erlmr.config import ModelConfig
from erlmr.data import load_dataset
from erlmr.methods import MethodContext, build_method
from erlmr.nn.model import MultiModalModel
from erlmr.training.builders import ModelSpec, build_model


def model_for(splits, seed: int) -> MultiModalModel:
    torch.manual_seed(seed)
    shapes = splits.input_shapes()
    spec = ModelSpec(list(splits.modalities), shapes, {m: "mlp" for m in splits.modalities}, splits.num_classes, False)
    return build_model(ModelConfig(), spec)


def joint_epoch(model: MultiModalModel, splits, batch_size: int) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def run() -> None:
        for inputs, labels in splits.train.batches(batch_size):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(inputs).logits, labels).backward()
            optimizer.step()

    return run


def hooks(splits, batch_size: int, seed: int) -> dict[str, Callable[[], None]]:
    """Each hook on its own model, run as the trainer runs it at an epoch where it does its work."""
    context = MethodContext(splits.modalities, splits.num_classes, batch_size, torch.device("cpu"), splits)
    built = {}
    for label, name, options, epoch in [
        ("sample_valuation: valuation (level sample)", "sample_valuation", {"warmup": 1}, 0),
        ("sample_valuation: valuation (level modality)", "sample_valuation", {"warmup": 1, "level": "modality"}, 0),
        ("relearning: diagnosis and re-initialisation", "relearning", {"reinit_epoch": 1}, 1),
        ("lfm: learnable hyper-step", "lfm", {"schedule": "learnable"}, 0),
    ]:
        model = model_for(splits, seed)
        method = build_method(name, options, model, context)
        hook = method.on_epoch_start if name == "lfm" else method.on_epoch_end
        built[label] = lambda hook=hook, model=model, epoch=epoch: hook(model, epoch)
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--modalities", type=int, default=2, help="synthetic modalities (strengths 2.5, 1.0, 0.8, ...)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the report to this markdown file")
    args = parser.parse_args(argv)
    strengths = [2.5, 1.0, 0.8, 0.6, 0.5][: args.modalities]
    splits = load_dataset("synthetic", None, args.seed, 0.1, {"strengths": strengths, "train_size": args.train_size})
    epoch = joint_epoch(model_for(splits, args.seed), splits, args.batch_size)
    work = hooks(splits, args.batch_size, args.seed)
    ratios: dict[str, list[float]] = {label: [] for label in work}
    shuffle = random.Random(args.seed)
    for _ in range(args.rounds):
        started = time.perf_counter()
        epoch()
        epoch_time = time.perf_counter() - started
        for label in shuffle.sample(list(work), len(work)):
            started = time.perf_counter()
            work[label]()
            ratios[label].append((time.perf_counter() - started) / epoch_time)
    lines = [
        f"Synthetic data, {args.modalities} modalities, MLP encoders, "
        f"{len(splits.train)} train / {len(splits.val)} val "
        f"samples, batch {args.batch_size}; {args.rounds} rounds.",
        "",
        "| epoch hook | hook time / one joint training epoch (median, min-max) |",
        "|---|---|",
    ]
    for label, values in ratios.items():
        lines.append(f"| {label} | {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f}) |")
    publish(
        "\n".join(report_header("Epoch-hook cost", torch.device("cpu"), "hook_cost.py", argv))
        + "\n".join(lines)
        + "\n",
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
