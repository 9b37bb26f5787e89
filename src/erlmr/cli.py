"""The ``erlmr`` command line: train, list, bench, tune, eval, report, data."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import TYPE_CHECKING, Sequence, cast

from .errors import ConfigError, ErlmrError, TrainingInterrupted

if TYPE_CHECKING:
    from .data.store import RecordedSplits

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
    parser.add_argument(
        "--tensorboard",
        action="store_true",
        help="also log the per-epoch metrics for TensorBoard under RUN_DIR/tensorboard",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set method.options.pareto_mode=features",
    )


def overrides_from(args: argparse.Namespace) -> list[str]:
    from .config import yaml_value

    overrides = []
    if getattr(args, "data", None) and not getattr(args, "dataset", None):
        overrides.append("data.dataset=arrays")
    for dest, key in TRAIN_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value) if isinstance(value, str) else yaml_value(value)}")
    if getattr(args, "quiet", False):
        overrides.append("train.quiet=true")
    if getattr(args, "tensorboard", False):
        overrides.append("train.tensorboard=true")
    return overrides + list(args.set)


def command_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .training.distributed import launched_rank
    from .training.trainer import resume, train

    if args.resume:
        if args.config:
            raise ConfigError("--resume reads the config from the run folder (config.yaml); drop --config")
        result = resume(args.resume, overrides_from(args))
    else:
        result = train(load_config(args.config, overrides_from(args)))
    if launched_rank() != 0:  # under torchrun, rank 0 alone reports
        return 0
    test = result.summary["test"]
    per_modality = "  ".join(f"{m} {a:.3f}" for m, a in test["modality_accuracy"].items())
    print(f"test accuracy {test['accuracy']:.3f}  macro-F1 {test['macro_f1']:.3f}  per modality: {per_modality}")
    if "linear_probe" in test:
        probes = "  ".join(f"{m} {a:.3f}" for m, a in test["linear_probe"].items())
        print(f"linear probe of each modality's features (test): {probes}")
    print(f"run folder: {result.run_dir}")
    return 0


def command_list(args: argparse.Namespace) -> int:
    from .data import DATASETS
    from .encoders import ENCODERS
    from .methods import METHODS
    from .nn.fusion import FUSIONS

    for title, registry in (("methods", METHODS), ("datasets", DATASETS), ("encoders", ENCODERS), ("fusion", FUSIONS)):
        print(f"{title}:")
        for name, description in registry.describe().items():
            print(f"  {name:<16} {description}")
    return 0


def command_bench(args: argparse.Namespace) -> int:
    from .analysis.bench import parse_methods, parse_shard, run_bench

    command, shard = shlex.join(["erlmr", *args.argv]), parse_shard(args.shard)
    if args.tuned:
        if args.datasets or args.methods or args.config:
            raise ConfigError(
                "--tuned takes the datasets, methods and config from the studies; "
                "drop --datasets, --methods and --config"
            )
        from .tuning.results import run_tuned_bench

        result = run_tuned_bench(
            args.tuned, args.seeds, args.out, overrides_from(args), args.jobs, command, not args.quiet, shard
        )
    elif not args.datasets or not args.methods:
        raise ConfigError("bench needs --datasets and --methods (or --tuned TUNE_OUT_OR_STORAGE)")
    else:
        result = run_bench(
            datasets=[d for d in args.datasets.split(",") if d],
            methods=parse_methods(args.methods),
            seeds=args.seeds,
            out=args.out,
            base_config=args.config,
            overrides=overrides_from(args),
            jobs=args.jobs,
            command=command,
            progress=not args.quiet,
            shard=shard,
        )
    print(result.table)
    print(f"results: {', '.join(map(str, result.files))}")
    return 1 if result.failures else 0


def command_tune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .analysis.bench import parse_methods
    from .tuning.space import read_user_space
    from .tuning.tune import TuneSettings, metric_named, tune

    if args.run_dir:
        raise ConfigError("erlmr tune writes one run folder per trial under --out; drop --run-dir")
    methods = parse_methods(args.method or "")
    settings = TuneSettings(
        trials=args.trials,
        metric=metric_named(args.metric),
        out=Path(args.out),
        storage=args.storage,
        study_prefix=args.study,
        heartbeat=args.heartbeat,
        prune=not args.no_prune,
        prune_warmup=args.prune_warmup,
        prune_startup=args.prune_startup,
        progress=not args.quiet,
    )
    flags = argparse.Namespace(**{**vars(args), "method": None})  # each method is set per study
    records = tune(
        methods,
        args.config,
        overrides_from(flags),
        read_user_space(args.config, args.space),
        settings,
        shlex.join(["erlmr", *args.argv]),
    )
    from .tuning.results import markdown, summary_table

    print(markdown(*summary_table(records)), end="")
    print(f"results: {args.out}/tuning.md; benchmark the best settings with: erlmr bench --tuned {args.out} --seeds 3")
    return 0


def add_tune_command(commands: argparse._SubParsersAction) -> None:
    tune = commands.add_parser(
        "tune",
        help="tune methods on the validation split with the same number of trials each (Optuna)",
        description="Tune each --method with --trials trials on the validation split (docs/protocol.md). "
        "Several processes or hosts given the same --storage share the trials.",
    )
    add_train_flags(tune)
    tune.add_argument(
        "--trials", type=int, default=20, help="trials per method, the same for every method (default 20)"
    )
    tune.add_argument(
        "--metric",
        default="val_accuracy",
        help="validation quantity to optimise: val_accuracy (default), val_macro_f1, val_imbalance_degree",
    )
    tune.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="KEY=RANGE",
        help="add or change a search range: METHOD.OPTION or SECTION.KEY = uniform(a,b), log_uniform(a,b), "
        "int_range(a,b), choice(x,y,...) or fixed, e.g. --space ogm_ge.alpha=log_uniform(0.05,0.5)",
    )
    tune.add_argument(
        "--storage",
        help="study storage: sqlite:///PATH (default OUT/study.db), a database URL such as "
        "postgresql://USER@HOST/DB, or journal:///PATH on a shared filesystem",
    )
    tune.add_argument("--study", default="", metavar="PREFIX", help="prefix of the study names (DATASET/METHOD)")
    tune.add_argument(
        "--heartbeat",
        type=int,
        default=60,
        metavar="SECONDS",
        help="a running trial's heartbeat; one silent for 3 beats is marked failed (default 60)",
    )
    tune.add_argument("--no-prune", action="store_true", help="never stop a trial early")
    tune.add_argument(
        "--prune-warmup",
        type=int,
        metavar="EPOCHS",
        help="epochs every trial runs before it may be pruned (default a quarter of the epochs)",
    )
    tune.add_argument(
        "--prune-startup",
        type=int,
        default=5,
        metavar="TRIALS",
        help="trials of a method that run in full before pruning starts (default 5)",
    )
    tune.set_defaults(run=command_tune, out="runs/tune")


def format_evaluation(result: dict) -> str:
    def listing(values: dict) -> str:
        return "  ".join(f"{m} {v:.3f}" for m, v in values.items())

    dropped = f"  missing (zeroed): {', '.join(result['dropped'])}" if result["dropped"] else ""
    lines = [
        f"{result['run']}: test split of {result['data']} ({result['samples']} samples){dropped}",
        f"accuracy {result['accuracy']:.3f}  macro-F1 {result['macro_f1']:.3f}",
        f"per-modality accuracy:    {listing(result['modality_accuracy'])}",
        f"contribution (Shapley):   {listing(result['contribution'])}  "
        f"imbalance degree {result['imbalance_degree']:.3f}",
        f"accuracy without one:     {listing(result['missing_modality_accuracy'])}",
    ]
    return "\n".join(lines)


def command_eval(args: argparse.Namespace) -> int:
    from .analysis.prediction import evaluate_run

    result = evaluate_run(args.run_dir, args.data, args.drop_modality, args.device)
    print(json.dumps(result, indent=2) if args.json else format_evaluation(result))
    return 0


def command_report(args: argparse.Namespace) -> int:
    from .analysis.report import write_report

    print(f"report: {write_report(args.source, args.out)}")
    return 0


def command_data_prepare(args: argparse.Namespace) -> int:

    from .config import parse_override
    from .data import DATASETS, load_dataset
    from .errors import ConfigError

    # An options type is a dataclass (registry.options_type types it as a plain type).
    if "cache" not in DATASETS.options_type(args.name).__dataclass_fields__:  # type: ignore[attr-defined]
        raise ConfigError(f"dataset {args.name!r} is read directly from its files; it has no cache to prepare")
    options = {}
    for text in args.set:
        keys, value = parse_override(text)
        options[".".join(keys)] = value
    options["cache"] = True
    if args.skip_bad:
        options["skip_bad"] = True
    if args.cache_dir:
        options["cache_dir"] = args.cache_dir
    if args.workers is not None:
        options["workers"] = args.workers
    # A dataset with a cache option loads as RecordedSplits, which name the skipped samples and the cache.
    splits = cast("RecordedSplits", load_dataset(args.name, args.root, 0, 0.1, options))
    shapes = "  ".join(f"{m} {tuple(s)}" for m, s in splits.input_shapes().items())
    print(
        f"{args.name}: {len(splits.train) + len(splits.val)} train / {len(splits.test)} test samples, "
        f"{splits.num_classes} classes; {shapes}"
    )
    if getattr(splits, "skipped", None):
        print(f"skipped {len(splits.skipped)} bad sample(s), the first: {splits.skipped[0]}")
    print(f"cache: {splits.cache}")
    return 0


def command_data_avdigits(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .data.avdigits import build_avdigits, default_avdigits_dir

    out = Path(args.out) if args.out else default_avdigits_dir(args.clips, args.seed)
    if args.if_missing and (out / "meta.json").exists():
        print(f"AV-digits already built in {out}")
        return 0
    build_avdigits(out, clips=args.clips, seed=args.seed, workers=args.workers)
    print(f"AV-digits ({args.clips} clips, seed {args.seed}) written to {out}")
    print(f"train on it with: erlmr train --dataset avdigits --set data.root={out}")
    return 0


def command_data_check(args: argparse.Namespace) -> int:
    from .analysis.datacheck import check_dataset, format_check
    from .config import parse_override

    if not args.dataset and not args.data:
        raise ConfigError("erlmr data check needs --dataset NAME or --data DIR (an array folder)")
    options = {}
    for text in args.set:
        keys, value = parse_override(text)
        options[".".join(keys)] = value
    report = check_dataset(args.dataset or "arrays", args.data, options, args.normalize, args.seed, args.val_fraction)
    print(json.dumps(report, indent=2) if args.json else format_check(report))
    return 0


def command_data_avdigits_media(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .data.avdigits_media import build_avdigits_media, default_media_dir

    out = Path(args.out) if args.out else default_media_dir(args.clips, args.seed)
    if args.if_missing and (out / "meta.json").exists():
        print(f"AV-digits media already built in {out}")
        return 0
    build_avdigits_media(out, clips=args.clips, seed=args.seed, workers=args.workers)
    print(f"AV-digits media ({args.clips} clips, seed {args.seed}) written to {out} in the CREMA-D layout")
    print(f"decode it with: erlmr data prepare crema-d --root {out}")
    return 0


def add_data_commands(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="dataset tools")
    actions = data.add_subparsers(dest="data_command", required=True)
    prepare = actions.add_parser("prepare", help="decode a raw dataset folder once into a memory-mapped cache")
    prepare.add_argument("name", help="registered dataset name, e.g. crema-d")
    prepare.add_argument("--root", required=True, help="the dataset folder, laid out as docs/datasets.md shows")
    prepare.add_argument("--cache-dir", help="where to write the cache (default ROOT/.erlmr-cache)")
    prepare.add_argument("--skip-bad", action="store_true", help="skip unreadable samples and report how many")
    prepare.add_argument("--workers", type=int, help="decoding processes (default: one per core)")
    prepare.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        help="a dataset option, e.g. --set image_size=112; train with the same options",
    )
    prepare.set_defaults(run=command_data_prepare)
    avdigits = actions.add_parser("avdigits", help="build the AV-digits audio-visual set (needs espeak-ng)")
    avdigits.add_argument("--out", help="folder to write (default $ERLMR_DATA/avdigits-CLIPS-SEED, ~/.cache/erlmr)")
    avdigits.add_argument("--clips", type=int, default=2000, help="number of clips (default 2000)")
    avdigits.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    avdigits.add_argument("--workers", type=int, default=2, help="espeak-ng processes in parallel (default 2)")
    avdigits.add_argument("--if-missing", action="store_true", help="do nothing when the folder is already built")
    avdigits.set_defaults(run=command_data_avdigits)
    check = actions.add_parser(
        "check", help="shapes, scales, classes, leaks and a quick per-modality probe of a dataset, before training"
    )
    check.add_argument("--dataset", help="registered dataset name (see 'erlmr list'); default: arrays with --data")
    check.add_argument("--data", help="the dataset folder, or an array folder (train.npz, test.npz, ...)")
    check.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        help="a dataset option, e.g. --set audio_snr_db=10 (as data.options in training)",
    )
    check.add_argument("--normalize", default="auto", help="the data.normalize training will use (default auto)")
    check.add_argument("--val-fraction", type=float, default=0.1, help="data.val_fraction (default 0.1)")
    check.add_argument("--seed", type=int, default=0, help="train.seed: the validation split and the samples drawn")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(run=command_data_check)
    media = actions.add_parser(
        "avdigits-media",
        help="write AV-digits (digits 0-5) as CREMA-D-layout media files: WAV + FLV video (needs espeak-ng, PyAV)",
    )
    media.add_argument("--out", help="folder to write (default $ERLMR_DATA/avdigits-media-CLIPS-SEED, ~/.cache/erlmr)")
    media.add_argument("--clips", type=int, default=600, help="number of clips (default 600)")
    media.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    media.add_argument("--workers", type=int, default=2, help="processes in parallel (default 2)")
    media.add_argument("--if-missing", action="store_true", help="do nothing when the folder is already built")
    media.set_defaults(run=command_data_avdigits_media)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="erlmr", description="Balanced multi-modal learning: ERL-MR and its baselines"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train one model and write a run folder")
    add_train_flags(train)
    train.add_argument(
        "--resume", metavar="RUN_DIR", help="continue an interrupted run from its folder (its config.yaml and last.pt)"
    )
    train.set_defaults(run=command_train)
    listing = commands.add_parser("list", help="list registered methods, datasets, encoders and fusion heads")
    listing.set_defaults(run=command_list)
    bench = commands.add_parser("bench", help="train a grid of datasets × methods × seeds and tabulate the results")
    bench.add_argument("--datasets", help="comma-separated dataset names")
    bench.add_argument(
        "--methods",
        help=(
            "comma-separated method names, NAME[option=value] for options (unimodal[modality=audio]); "
            "all = every method that runs on its defaults"
        ),
    )
    bench.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1)")
    bench.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process")
    bench.add_argument(
        "--shard",
        metavar="I/N",
        help="train only share I of N of the grid (for array jobs); the tables cover every finished run in --out",
    )
    bench.add_argument(
        "--tuned",
        metavar="TUNE_OUT_OR_STORAGE",
        help="train each method tuned by 'erlmr tune' at its defaults and at its best setting",
    )
    add_train_flags(bench)
    bench.set_defaults(run=command_bench, out="bench")
    add_tune_command(commands)
    evaluation = commands.add_parser("eval", help="evaluate a saved run on its test split and print the metrics")
    evaluation.add_argument("run_dir", help="a run folder written by 'erlmr train' or 'erlmr bench'")
    evaluation.add_argument("--data", help="evaluate on this array folder's test split instead (same modalities)")
    evaluation.add_argument(
        "--drop-modality",
        action="append",
        default=[],
        metavar="NAME",
        help="treat this modality as missing (its fusion input zeroed); repeatable",
    )
    evaluation.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    evaluation.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluation.set_defaults(run=command_eval)
    report = commands.add_parser("report", help="write an HTML report with plots of a run or bench folder")
    report.add_argument("source", help="a run folder or a bench output folder")
    report.add_argument("--out", help="folder for report.html and the PNG plots (default SOURCE/report)")
    report.set_defaults(run=command_report)
    add_data_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.run(args)
    except TrainingInterrupted as error:
        print(f"erlmr: {error}", file=sys.stderr)
        return 128 + error.signal_number
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
