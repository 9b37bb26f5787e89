"""How long does ``erlmr data check`` take, and how close are its probes to trained unimodal runs?

For the scaled-digits fixture of the tests (tests/scaled_views.py: two views of scikit-learn's digits, one
multiplied by 1 .. 10^4 per pixel), AV-digits (default build and noise) and BasicMotions, the command
``erlmr data check --json`` runs in a fresh process, timed from start to exit (imports included). Each
modality's probe accuracy on the test split is set against the same modality trained alone
(``unimodal``, test split, 3 seeds): for AV-digits and BasicMotions the committed benchmark's runs
(benchmarks/results/), for the fixture runs trained here on the defaults (``erlmr bench``, 30 epochs).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/data_check.py --out benchmarks/results/data_check.md
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from step_cost import publish, report_header

from erlmr.analysis.bench import run_bench

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from scaled_views import MODALITIES, write_scaled_digits  # noqa: E402

COMMITTED = {"avdigits": "avdigits", "basicmotions": "basicmotions"}  # benchmarks/results/NAME/results.csv


def timed_check(arguments: list[str]) -> tuple[float, float, dict]:
    """Wall time and CPU time (user + system) of ``erlmr data check ARGUMENTS --json`` in a fresh process,
    and its report. On a machine shared with other work the CPU time is the steadier of the two."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "erlmr", "data", "check", *arguments, "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads(done.stdout)


def unimodal_accuracy(results_csv: Path, modality: str) -> tuple[float, float, int]:
    """Mean, std and count over seeds of ``unimodal[modality]``'s own test accuracy in a bench's results.csv."""
    with results_csv.open() as file:
        values = [
            float(row[f"acc_{modality}"])
            for row in csv.DictReader(file)
            if row["method"] == f"unimodal (modality={modality})"
        ]
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def fixture_runs(work: Path) -> Path:
    """The fixture folder, and its unimodal runs on the defaults (3 seeds), in ``work``."""
    folder = write_scaled_digits(work / "scaled-digits")
    methods = [f"unimodal[modality={m}]" for m in MODALITIES]
    run_bench(
        ["arrays"],
        methods,
        3,
        work / "bench",
        overrides=[f"data.root={folder}", "train.device=cpu"],
        jobs=2,
        progress=False,
    )
    return folder


def rows_for(name: str, timing: tuple[float, float], report: dict, results_csv: Path) -> list[str]:
    lines = []
    for m in report["modalities"]:
        mean, std, seeds = unimodal_accuracy(results_csv, m)
        probe = report["probe"]["accuracy"]["test"][m]
        lines.append(
            f"| {name} | {m} | {report['probe']['representation'][m]} | {probe:.3f} | {mean:.3f} ± {std:.3f} "
            f"({seeds}) | {probe - mean:+.3f} | {timing[0]:.1f} / {timing[1]:.1f} | {report['seconds']:.1f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="markdown file to write")
    parser.add_argument("--work", help="folder for the fixture and its runs (default: a temporary folder)")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="erlmr-data-check-"))
    folder = fixture_runs(work)
    table = [
        "| data set | modality | probe features | probe test accuracy | trained alone, test (seeds) | "
        "probe − trained | command: wall / CPU s | load + check s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    *timing, report = timed_check(["--data", str(folder)])
    table += rows_for("scaled digits (array folder)", timing, report, work / "bench" / "results.csv")
    for name, dataset in COMMITTED.items():
        *timing, report = timed_check(["--dataset", dataset])
        table += rows_for(name, timing, report, ROOT / "benchmarks" / "results" / name / "results.csv")
    header = report_header(
        "erlmr data check: time and probe against trained unimodal runs", torch.device("cpu"), "data_check.py", argv
    )
    notes = [
        "",
        "Wall time is the whole command in a fresh process (imports included) on this shared machine; CPU time is",
        'user + system time of that process, what the command costs on an idle core. "load + check" is the',
        "report's own `seconds`: loading the data set (for AV-digits, its noise and log-mel spectrograms) and",
        'the check. "trained alone" is `unimodal` with the modality\'s own logits on the test split: for',
        "AV-digits and BasicMotions the committed benchmark (benchmarks/results/, 20 and 100 epochs), for the",
        "scaled digits `erlmr bench` on the defaults (30 epochs) run by this script.",
    ]
    publish("\n".join(header + table + notes) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
