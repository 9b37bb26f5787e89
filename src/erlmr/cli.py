"""The ``erlmr`` command line: train, list, bench."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from .errors import ErlmrError

# Flags that are shorthands for config keys: flag dest -> dotted config key.
TRAIN_FLAGS = {
    "dataset": "data.dataset",
    "data": "data.root",
    "method": "method.name",
    "fusion": "model.fusion",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "optim.lr",
    "optimizer": "optim.name",
    "schedule": "optim.schedule",
    "seed": "train.seed",
    "device": "train.device",
    "out": "train.out",
    "run_dir": "train.run_dir",
    "workers": "train.num_workers",
}


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file; flags below override its keys")
    parser.add_argument("--dataset", help="registered dataset name (see 'erlmr list')")
    parser.add_argument("--data", help="an array folder (train.npz, test.npz, ...); implies --dataset arrays")
    parser.add_argument("--method", help="registered method, or a composition like erlmr+ogm_ge")
    parser.add_argument("--fusion", help="fusion head: concat, sum, film, gated")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--optimizer", help="sgd, adam or adamw")
    parser.add_argument("--schedule", help="none, step or cosine")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument("--out", help="folder under which run folders are created (default runs/)")
    parser.add_argument("--run-dir", help="exact run folder to write")
    parser.add_argument("--workers", type=int, help="DataLoader worker processes")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set method.options.pareto_mode=features")


def overrides_from(args: argparse.Namespace) -> list[str]:
    overrides = []
    if getattr(args, "data", None) and not getattr(args, "dataset", None):
        overrides.append("data.dataset=arrays")
    for dest, key in TRAIN_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value) if isinstance(value, str) else value}")
    if getattr(args, "quiet", False):
        overrides.append("train.quiet=true")
    return overrides + list(args.set)


def command_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .ddp import launched_rank
    from .trainer import train

    config = load_config(args.config, overrides_from(args))
    result = train(config)
    if launched_rank() != 0:  # under torchrun, rank 0 alone reports
        return 0
    test = result.summary["test"]
    per_modality = "  ".join(f"{m} {a:.3f}" for m, a in test["modality_accuracy"].items())
    print(f"test accuracy {test['accuracy']:.3f}  macro-F1 {test['macro_f1']:.3f}  per modality: {per_modality}")
    print(f"run folder: {result.run_dir}")
    return 0


def command_list(args: argparse.Namespace) -> int:
    from .data import DATASETS
    from .encoders import ENCODERS
    from .fusion import FUSIONS
    from .methods import METHODS

    for title, registry in (("methods", METHODS), ("datasets", DATASETS), ("encoders", ENCODERS), ("fusion", FUSIONS)):
        print(f"{title}:")
        for name, description in registry.describe().items():
            print(f"  {name:<16} {description}")
    return 0


def command_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    table = run_bench(
        datasets=[d for d in args.datasets.split(",") if d],
        methods=[m for m in args.methods.split(",") if m],
        seeds=args.seeds,
        out=args.out,
        base_config=args.config,
        overrides=overrides_from(args),
    )
    print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="erlmr", description="Balanced multi-modal learning: ERL-MR and its baselines")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train one model and write a run folder")
    add_train_flags(train)
    train.set_defaults(run=command_train)
    listing = commands.add_parser("list", help="list registered methods, datasets, encoders and fusion heads")
    listing.set_defaults(run=command_list)
    bench = commands.add_parser("bench", help="train a grid of datasets × methods × seeds and tabulate the results")
    bench.add_argument("--datasets", required=True, help="comma-separated dataset names")
    bench.add_argument("--methods", required=True, help="comma-separated method names")
    bench.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1)")
    add_train_flags(bench)
    bench.set_defaults(run=command_bench, out="bench")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ErlmrError as error:
        print(f"erlmr: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("erlmr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
