"""What in ERL-MR does the work: ERL-MR with each part removed or swapped, against joint training, the
multi-loss control (``joint_unimodal``) and the strongest baselines, on seven data sets, with 95 %
intervals of every difference to ``joint`` paired by seed.

    python benchmarks/ablation.py --out benchmarks/results/ablation            # everything (resumable)
    python benchmarks/ablation.py --datasets mfeat,cells --seeds-main 2 --seeds-grid 1 --epochs-scale 0.2

Main rows (``--seeds-main``, 5): erlmr, joint, joint_unimodal and ``--baselines``. The wider grid
(``--seeds-grid``, 3): every ERL-MR variant of :data:`VARIANTS` and each modality alone. Each data set is one
``erlmr bench`` folder under ``OUT`` (results.md there has the tables with the intervals); the summary
``OUT/results.md`` puts the variants of all data sets side by side. Real data sets come from
``benchmarks/real_sets.py`` (built here if missing).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import yaml  # noqa: E402

from erlmr.analysis.bench import parse_method_spec, run_bench, summary_row  # noqa: E402
from erlmr.analysis.cost import machine_description  # noqa: E402
from erlmr.analysis.runs import find_runs, with_options  # noqa: E402
from erlmr.analysis.stats import by_seed, paired_difference  # noqa: E402

#: ERL-MR with one part removed or swapped (label → grid spec)
VARIANTS = {
    "erlmr (default)": "erlmr",
    "no Euler map (no phase term)": "erlmr[model.euler=false]",
    "no phase term": "erlmr[phase_weight=0]",
    "no per-modality CE": "erlmr[modality_ce_weight=0]",
    "fixed weights (no Pareto)": "erlmr[pareto=false]",
    "Pareto target: authors (2·phase)": "erlmr[pareto_target=authors]",
    "Pareto mode: features (MGDA-UB)": "erlmr[pareto_mode=features]",
    "cosine across the batch": "erlmr[cosine=batch]",
    "normalisation: none": "erlmr[normalization=none]",
    "normalisation: l2": "erlmr[normalization=l2]",
    "normalisation: loss": "erlmr[normalization=loss]",
    "fusion: sum": "erlmr[model.fusion=sum]",
    "fusion: FiLM": "erlmr[model.fusion=film]",
    "fusion: gated": "erlmr[model.fusion=gated]",
}
TWO_MODALITY_ONLY = {"erlmr[model.fusion=film]", "erlmr[model.fusion=gated]"}


@dataclass
class DataSet:
    name: str
    dataset: str
    modalities: list[str]
    epochs: int
    overrides: list[str] = field(default_factory=list)
    root: str | None = None


def data_sets(real: Path) -> dict[str, DataSet]:
    arrays = lambda name, modalities: DataSet(name, "arrays", modalities, 40, [], str(real / name))  # noqa: E731
    return {
        "avdigits": DataSet("avdigits", "avdigits", ["audio", "visual"], 20),
        "avdigits_reversed": DataSet(
            "avdigits_reversed",
            "avdigits",
            ["audio", "visual"],
            20,
            ["data.options.audio_snr_db=10", "data.options.image_sigma=10"],
        ),
        "basicmotions": DataSet("basicmotions", "basicmotions", ["acc", "gyro"], 100),
        "synthetic": DataSet("synthetic", "synthetic", ["m0", "m1"], 20),
        "mfeat": arrays("mfeat", ["pixel", "fourier", "morphology"]),
        "cells": arrays("cells", ["nucleus", "cytoplasm"]),
        "leaves": arrays("leaves", ["shape", "texture", "colour"]),
    }


def run_data_set(data: DataSet, args: argparse.Namespace) -> None:
    out = args.out / data.name
    epochs = max(1, round(data.epochs * args.epochs_scale))
    # The linear probes and feature maps are the main benchmark's; here they would double a small run's time.
    overrides = [
        *data.overrides,
        f"train.epochs={epochs}",
        "train.device=cpu",
        "train.linear_probe=false",
        "train.feature_maps=false",
    ]
    if data.root:
        overrides.append(f"data.root={data.root}")
    main = ["erlmr", "joint", "joint_unimodal", *args.baselines.split(",")]
    grid = [
        spec
        for spec in VARIANTS.values()
        if spec != "erlmr" and (len(data.modalities) == 2 or spec not in TWO_MODALITY_ONLY)
    ]
    grid += [f"unimodal[modality={m}]" for m in data.modalities]
    for methods, seeds in ((main, args.seeds_main), (grid, args.seeds_grid)):
        run_bench(
            [data.dataset],
            methods,
            seeds,
            out,
            overrides=overrides,
            jobs=args.jobs,
            progress=True,
            command=shlex.join(["python", "benchmarks/ablation.py", *sys.argv[1:]]),
        )


def rows_of(folder: Path) -> list[dict]:
    return [
        dict(summary_row(run.summary), fingerprint=run.summary.get("data_fingerprint")) for run in find_runs(folder)
    ]


def cell(rows: list[dict], method: str, key: str = "accuracy") -> str:
    values = [r[key] for r in rows if r["method"] == method and r.get(key) is not None]
    if not values:
        return "—"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def difference(rows: list[dict], method: str, key: str = "accuracy") -> str:
    joint = by_seed([r for r in rows if r["method"] == "joint"], key)
    found = paired_difference(by_seed([r for r in rows if r["method"] == method], key), joint)
    return found.format() if found else "—"


def weakest_modality(data: DataSet, rows: list[dict]) -> str:
    """The modality with the lowest accuracy alone (its own ``unimodal`` runs)."""
    alone = {m: [r["accuracy"] for r in rows if r["method"] == f"unimodal (modality={m})"] for m in data.modalities}
    return min((m for m in alone if alone[m]), key=lambda m: statistics.mean(alone[m]), default=data.modalities[-1])


def table_label(spec: str) -> str:
    """How the bench tables label a grid spec: the spec itself for a variant that sets config keys,
    otherwise the method with its options, e.g. ``erlmr (phase_weight=0)``."""
    name, options = parse_method_spec(spec)
    if any("." in key for key in options):
        return spec
    return with_options(name, {key: yaml.safe_load(value) for key, value in options.items()})


def seed_zero_fingerprint(rows: list[dict]) -> str:
    """The data fingerprint of the seed-0 runs (each seed draws its own validation split)."""
    return next((r["fingerprint"] for r in rows if r["seed"] == 0), "not recorded")


def summary_table(data: DataSet, rows: list[dict]) -> list[str]:
    weak = weakest_modality(data, rows)
    labels = {table_label(spec): label for label, spec in VARIANTS.items()}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = [
        f"### {data.name} (weak modality: {weak}; seed-0 data fingerprint {seed_zero_fingerprint(rows)})",
        "",
        "| run | seeds | fused accuracy | Δ vs joint [95% CI] | weak-modality accuracy | Δ weak vs joint [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for method in methods:
        seeds = sum(r["method"] == method for r in rows)
        name = labels.get(method, method)
        lines.append(
            f"| {name} | {seeds} | {cell(rows, method)} | {difference(rows, method) if method != 'joint' else ''} | "
            f"{cell(rows, method, f'acc_{weak}')} | "
            f"{difference(rows, method, f'acc_{weak}') if method != 'joint' else ''} |"
        )
    return lines


def machine(out: Path) -> str:
    """The host (as erlmr bench tables name it, CPU kernels included) and the devices the runs reported."""
    devices = sorted({run.summary.get("cost", {}).get("device", "unknown") for run in find_runs(out)})
    return machine_description(devices)


def write_summary(args: argparse.Namespace, sets: dict[str, DataSet]) -> None:
    lines = [
        "# ERL-MR ablation",
        "",
        f"- command: `python benchmarks/ablation.py {shlex.join(sys.argv[1:])}`",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; machine: {machine(args.out)}",
        "- test split, model selected on validation; Δ: paired by seed, Student's t 95 % interval; "
        "* marks an interval that excludes 0",
        "",
    ]
    for name, data in sets.items():
        folder = args.out / name
        if folder.is_dir() and any(folder.rglob("summary.json")):
            lines += [*summary_table(data, rows_of(folder)), ""]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    (args.out / "ablation.json").write_text(json.dumps({"variants": VARIANTS, "argv": sys.argv[1:]}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ablation"))
    parser.add_argument("--datasets", default="avdigits,avdigits_reversed,basicmotions,synthetic,mfeat,cells,leaves")
    parser.add_argument("--baselines", default="mla,gblending,reconboost", help="the strongest baselines (main rows)")
    parser.add_argument("--seeds-main", type=int, default=5)
    parser.add_argument("--seeds-grid", type=int, default=3)
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every data set's epochs")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--real", type=Path, default=Path.home() / ".cache" / "erlmr" / "real")
    args = parser.parse_args()
    sets = data_sets(args.real)
    chosen = {name: sets[name] for name in args.datasets.split(",")}
    if any(d.root for d in chosen.values()) and not all((args.real / n).is_dir() for n in ("mfeat", "cells", "leaves")):
        subprocess.run(
            [sys.executable, str(Path(__file__).with_name("real_sets.py")), "--out", str(args.real)], check=True
        )
    for data in chosen.values():
        run_data_set(data, args)
    write_summary(args, sets)
    print(f"ablation: {args.out / 'results.md'}")


if __name__ == "__main__":
    main()
