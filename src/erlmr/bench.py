"""Train a grid of datasets × methods × seeds, skip finished runs, and tabulate mean ± std over seeds."""
from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Sequence

from .checkpoint import atomic_write
from .config import load_config
from .trainer import train


def run_dir_for(out: Path, dataset: str, method: str, seed: int) -> Path:
    return out / dataset / method.replace("+", "_") / f"seed{seed}"


def run_one(out: Path, dataset: str, method: str, seed: int, base_config: str | None, overrides: Sequence[str]) -> dict:
    run_dir = run_dir_for(out, dataset, method, seed)
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    grid_keys = [f"data.dataset={dataset}", f"method.name={method}", f"train.seed={seed}", f"train.run_dir={run_dir}"]
    return train(load_config(base_config, list(overrides) + grid_keys)).summary


def summary_row(summary: dict) -> dict:
    row = {
        "dataset": summary["dataset"],
        "method": summary["method"],
        "seed": summary["seed"],
        "accuracy": summary["test"]["accuracy"],
        "macro_f1": summary["test"]["macro_f1"],
    }
    row.update({f"acc_{m}": a for m, a in summary["test"]["modality_accuracy"].items()})
    return row


def mean_std(values: Sequence[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def markdown_table(rows: Sequence[dict]) -> str:
    """One table per dataset: mean ± std over seeds of every numeric column, one line per method."""
    sections = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        subset = [r for r in rows if r["dataset"] == dataset]
        columns = [c for c in subset[0] if c not in ("dataset", "method", "seed")]
        lines = [
            f"### {dataset}",
            "",
            "| method | seeds | " + " | ".join(columns) + " |",
            "|---|---|" + "---|" * len(columns),
        ]
        for method in dict.fromkeys(r["method"] for r in subset):
            runs = [r for r in subset if r["method"] == method]
            cells = [mean_std([r[c] for r in runs]) for c in columns]
            lines.append(f"| {method} | {len(runs)} | " + " | ".join(cells) + " |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def run_bench(
    datasets: Sequence[str],
    methods: Sequence[str],
    seeds: int,
    out: str | Path,
    base_config: str | None = None,
    overrides: Sequence[str] = (),
) -> str:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [
        summary_row(run_one(out, dataset, method, seed, base_config, overrides))
        for dataset in datasets
        for method in methods
        for seed in range(seeds)
    ]
    columns = list(dict.fromkeys(key for row in rows for key in row))

    def write_csv(file) -> None:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)

    atomic_write(out / "results.csv", write_csv, mode="w")
    table = markdown_table(rows)
    atomic_write(out / "results.md", lambda f: f.write(table), mode="w")
    return table
