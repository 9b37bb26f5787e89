"""Train a grid of datasets × methods × seeds, skip finished runs, and tabulate mean ± std over seeds."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import signal
import statistics
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from tqdm import tqdm

from ..config import Config, load_config
from ..data import load_dataset
from ..data.store import usable_cores
from ..errors import ConfigError, DataError, ErlmrError, TrainingInterrupted
from ..training.checkpoint import atomic_write, write_json
from ..training.lock import LOCK_NAME, FolderLock
from ..training.run_folder import RunFolder
from ..training.runstate import config_fingerprint, differences, result_config
from ..training.trainer import resume, train
from .cost import machine_description
from .datacheck import write_data_check
from .grid import ChildRuns, ForwardedStop, process_context
from .runs import TUNED_MARKER, TUNED_SUFFIX, VARIANT_MARKER, dataset_label, method_label, read_summary
from .stats import by_seed, paired_difference

JOINT = "joint"
UNIMODAL = "unimodal"


def parse_methods(text: str) -> list[str]:
    """Split ``"joint,unimodal[modality=audio],erlmr"`` at the commas outside brackets; ``all`` stands for
    every registered method that needs no option (so not ``unimodal``, which needs its modality)."""
    methods = [m.strip() for m in re.split(r",(?![^\[]*\])", text) if m.strip()]
    expanded = [name for m in methods for name in (methods_without_required_options() if m == "all" else [m])]
    return list(dict.fromkeys(expanded))


def methods_without_required_options() -> list[str]:
    from ..methods import METHODS

    return [JOINT] + [name for name in METHODS if name != JOINT and not METHODS.get(name).needs_options]


def parse_method_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"unimodal[modality=audio]"`` → ``("unimodal", {"modality": "audio"})`` (values as written)."""
    match = re.fullmatch(r"\s*([\w+]+)\s*(?:\[(.*)\])?\s*", spec)
    pairs = [p.strip() for p in (match.group(2) or "").split(",") if p.strip()] if match else []
    if match is None or any("=" not in p for p in pairs):
        raise ConfigError(
            f"grid method {spec!r} must look like NAME or NAME[option=value,...], e.g. unimodal[modality=audio]"
        )
    return match.group(1), dict(p.split("=", 1) for p in pairs)


def method_overrides(spec: str) -> list[str]:
    """Config overrides of a grid method: ``"unimodal[modality=audio]"`` → name and option keys; a key
    with a dot is a config key of its own (``"erlmr[model.euler=false]"``, ``"joint[model.fusion=sum]"``)."""
    name, options = parse_method_spec(spec)
    keys = [key if "." in key else f"method.options.{key}" for key in options]
    return [f"method.name={name}", *(f"{key}={value}" for key, value in zip(keys, options.values()))]


def folder_name(text: str) -> str:
    return re.sub(r"[^\w.=-]+", "_", text).strip("_")


@dataclass(frozen=True)
class GridMethod:
    """One method of a grid: its name in tables and failures, the config overrides it adds, the folder of
    its runs; a setting found by ``erlmr tune`` also has its own base config (the study's) and a record
    written beside each run as ``tuned.json`` (its label and where the setting came from)."""

    spec: str
    overrides: tuple[str, ...]
    folder: str
    config: str | None = None
    tuned: Mapping[str, Any] | None = None
    variant: Mapping[str, Any] | None = None
    #: the folder of another grid method whose runs have exactly this method's settings: a tuned setting
    #: that is the defaults is not trained twice, its runs are copies of the default's (``tuned.json`` added)
    same_runs_as: str | None = None


def grid_method(spec: str) -> GridMethod:
    """A grid method from its spec; one that sets config keys beyond the method's options is a variant,
    labelled by its spec in the tables (its summary alone would not tell it from the plain method)."""
    variant = {"label": spec} if any("." in key for key in parse_method_spec(spec)[1]) else None
    return GridMethod(spec, tuple(method_overrides(spec)), folder_name(spec), variant=variant)


Entry = tuple[str, GridMethod, int]


def run_dir_for(out: Path, dataset: str, method: str, seed: int) -> Path:
    return out / dataset / folder_name(method) / f"seed{seed}"


def run_one(
    out: Path, dataset: str, method: GridMethod, seed: int, base_config: str | None, overrides: Sequence[str]
) -> dict:
    """Train one grid entry; a finished run is read back, a partial one (an interrupted bench) continued."""
    run_dir = run_dir_for(out, dataset, method.folder, seed)
    if RunFolder(run_dir).finished:
        return read_summary(run_dir)
    for marker, record in ((TUNED_MARKER, method.tuned), (VARIANT_MARKER, method.variant)):
        if record is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json(run_dir / marker, dict(record))
    config = entry_config(out, (dataset, method, seed), base_config, overrides)
    if RunFolder(run_dir).has("last.pt"):
        check_same_settings(run_dir, config.to_dict())
        return resume(run_dir).summary
    return train(config).summary


def entry_config(out: Path, entry: Entry, base_config: str | None, overrides: Sequence[str]) -> Config:
    dataset, method, seed = entry
    grid_keys = [
        f"data.dataset={dataset}",
        *method.overrides,
        f"train.seed={seed}",
        f"train.run_dir={entry_dir(out, entry)}",
        "train.quiet=true",
    ]
    return load_config(method.config or base_config, list(overrides) + grid_keys)


def check_same_settings(run_dir: Path, config: dict) -> None:
    """Refuse a run in the folder that was trained, or started, with other settings than this bench's: an
    earlier bench with other flags, or a run copied in from another bench, must not fill a cell silently."""
    folder = RunFolder(run_dir)
    saved = folder.read_config().to_dict()
    if config_fingerprint(saved) != config_fingerprint(config):
        state = "a finished" if folder.finished else "an unfinished"
        raise ConfigError(
            f"{run_dir} holds {state} run with other settings than this bench's: "
            f"{differences(result_config(saved), result_config(config), ('in the folder', 'now'))}; re-run the "
            "bench with the settings it was started with, or move that folder away to train it afresh"
        )


def check_finished_runs(entries: Sequence[Entry], out: Path, base_config: str | None, overrides: Sequence[str]) -> None:
    """Every finished run the grid would count was trained with the settings this bench would train it with,
    on the data it would load (its fingerprint: a run copied from a machine whose espeak-ng or cache built
    other data has the same config and other numbers)."""
    fingerprints: dict[str, str] = {}
    for entry in entries:
        run_dir = entry_dir(out, entry)
        if entry[1].same_runs_as is not None or not RunFolder(run_dir).finished:
            continue
        config = entry_config(out, entry, base_config, overrides)
        check_same_settings(run_dir, config.to_dict())
        recorded = read_summary(run_dir).get("data_fingerprint")
        if recorded is not None and recorded != (now := data_fingerprint(config, fingerprints)):
            raise DataError(
                f"{run_dir} holds a finished run trained on other data than this bench loads (data fingerprint "
                f"{recorded} in the folder, {now} now: the dataset was built differently, docs/metrics.md 'What "
                "reproduces'); move that folder away to train it afresh on this data"
            )


def data_fingerprint(config: Config, known: dict[str, str]) -> str:
    """The fingerprint of the splits ``config`` loads (each dataset and seed loaded once)."""
    key = json.dumps([config.to_dict()["data"], config.train.seed], sort_keys=True, default=str)
    if key not in known:
        data = config.data
        splits = load_dataset(data.dataset, data.root, config.train.seed, data.val_fraction, data.options)
        known[key] = splits.fingerprint()
    return known[key]


def copy_same_runs(entries: Sequence[Entry], out: Path) -> None:
    """Fill each finished run of a method with ``same_runs_as`` from the run it equals, marker added."""
    for dataset, method, seed in entries:
        if method.same_runs_as is None:
            continue
        source, target = (
            run_dir_for(out, dataset, method.same_runs_as, seed),
            run_dir_for(out, dataset, method.folder, seed),
        )
        if RunFolder(source).finished and not RunFolder(target).finished:
            shutil.copytree(source, target, ignore=shutil.ignore_patterns(LOCK_NAME), dirs_exist_ok=True)
            if method.tuned is not None:
                write_json(target / TUNED_MARKER, {**method.tuned, "copied_from": method.same_runs_as})


def attempt(
    out: Path, dataset: str, method: GridMethod, seed: int, base_config: str | None, overrides: Sequence[str]
) -> str | None:
    """Run one grid entry; the error message if it failed (a diverged run must not stop the grid)."""
    try:
        run_one(out, dataset, method, seed, base_config, overrides)
    except ErlmrError as error:
        return str(error)
    return None


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"2/4"`` → (2, 4): the second of four shares of the grid."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise ConfigError(
            f"--shard {text!r} must look like I/N with 1 <= I <= N, e.g. --shard 1/4 "
            "(in a SLURM array job --array=1-N: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)"
        )
    return int(match.group(1)), int(match.group(2))


def shard_of(entries: Sequence[Entry], shard: tuple[int, int] | None) -> list[Entry]:
    """Share I of N of the grid: every N-th entry from the I-th, so that each share mixes datasets,
    methods and seeds and the N shares partition the grid."""
    if shard is None:
        return list(entries)
    index, count = shard
    return list(entries[index - 1 :: count])


def summary_row(summary: dict) -> dict:
    """One CSV row: test metrics, contributions, missing-modality accuracy and cost of one run."""
    test, cost = summary["test"], summary.get("cost", {})
    row = {
        "dataset": dataset_label(summary),
        "method": method_label(summary),
        "seed": summary["seed"],
        "accuracy": test["accuracy"],
        "macro_f1": test["macro_f1"],
    }
    row.update({f"acc_{m}": a for m, a in test["modality_accuracy"].items()})
    row.update({f"probe_{m}": a for m, a in test.get("linear_probe", {}).items()})
    row.update({f"contribution_{m}": c for m, c in test.get("contribution", {}).items()})
    row["imbalance_degree"] = test.get("imbalance_degree")
    row.update({f"acc_without_{m}": a for m, a in test.get("missing_modality_accuracy", {}).items()})
    for key in ("parameters", "flops_per_sample", "step_time_s", "peak_memory_mb"):
        row[key] = cost.get(key)
    if "copied_from" in summary.get("tuned", {}):
        row["tuned_is_default"] = True
    return row


def mean_std(values: Sequence[float | None], digits: int = 3) -> str:
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not present:
        return "n/a"
    spread = statistics.stdev(present) if len(present) > 1 else 0.0
    return f"{statistics.mean(present):.{digits}f} ± {spread:.{digits}f}"


def relative_step_times(rows: Sequence[dict]) -> list[float | None]:
    """Each run's step time divided by the mean step time of ``joint`` on the same dataset (None without joint)."""
    joint_means = {}
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        times = [
            r["step_time_s"] for r in rows if r["dataset"] == dataset and r["method"] == JOINT and r["step_time_s"]
        ]
        joint_means[dataset] = statistics.mean(times) if times else None
    return [
        r["step_time_s"] / joint_means[r["dataset"]] if r["step_time_s"] and joint_means[r["dataset"]] else None
        for r in rows
    ]


def table_columns(rows: Sequence[dict]) -> list[tuple[str, str]]:
    """(row key, heading) of the summary table: fused and per-modality accuracy, each modality's linear
    probe, imbalance, cost."""
    modality_columns = [
        (key, f"{key[4:]} accuracy") for key in rows[0] if key.startswith("acc_") and not key.startswith("acc_without_")
    ]
    probed = dict.fromkeys(key for row in rows for key in row if key.startswith("probe_"))  # not every run has them
    probe_columns = [(key, f"{key[6:]} linear probe") for key in probed]
    return [
        ("accuracy", "accuracy"),
        ("macro_f1", "macro-F1"),
        *modality_columns,
        *probe_columns,
        ("imbalance_degree", "imbalance degree"),
        ("step_time_vs_joint", "step time ÷ joint"),
    ]


def summary_tables(rows: Sequence[dict]) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Per dataset: the headings and, per method, its cells (mean ± std over seeds), the difference of
    its accuracy to ``joint``'s with a 95 % interval paired by seed (``*`` where it excludes 0), and
    whether its fused accuracy beats the best single modality trained alone (``unimodal`` runs)."""
    rows = [dict(r, step_time_vs_joint=ratio) for r, ratio in zip(rows, relative_step_times(rows))]
    tables = {}
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        subset = [r for r in rows if r["dataset"] == dataset]
        columns = table_columns(subset)
        joint = by_seed([r for r in subset if r["method"] == JOINT], "accuracy")
        best_single = best_single_modality(subset)
        lines = []
        for method in dict.fromkeys(r["method"] for r in subset):
            runs = [r for r in subset if r["method"] == method]
            cells = [
                mean_std([r.get(key) for r in runs], 2 if key == "step_time_vs_joint" else 3) for key, _ in columns
            ]
            difference = paired_difference(by_seed(runs, "accuracy"), joint) if joint and method != JOINT else None
            lines.append(
                [method, str(len(runs)), *cells, difference.format() if difference else "", beats(runs, best_single)]
            )
        headings = [
            "method",
            "seeds",
            *(heading for _, heading in columns),
            "Δ accuracy vs joint [95% CI]",
            f"beats {best_single[0]}" if best_single else "beats the best single modality",
        ]
        tables[dataset] = (headings, lines)
    return tables


def best_single_modality(rows: Sequence[dict]) -> tuple[str, float] | None:
    """The ``unimodal`` run label with the highest mean test accuracy, and that accuracy (None without)."""
    means = {}
    for label in dict.fromkeys(r["method"] for r in rows if r["method"].startswith(UNIMODAL)):
        means[label] = statistics.mean(r["accuracy"] for r in rows if r["method"] == label)
    return max(means.items(), key=lambda item: item[1]) if means else None


def beats(runs: Sequence[dict], best_single: tuple[str, float] | None) -> str:
    """ "yes"/"no": the method's mean fused accuracy against the best single modality's ("" for unimodal)."""
    if best_single is None or runs[0]["method"].startswith(UNIMODAL):
        return ""
    return "yes" if statistics.mean(r["accuracy"] for r in runs) > best_single[1] else "**no**"


def markdown_table(rows: Sequence[dict]) -> str:
    """One table per dataset: mean ± std over seeds, one line per method."""
    sections = []
    for dataset, (headings, lines) in summary_tables(rows).items():
        text = [f"### {dataset}", "", "| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
        text += ["| " + " | ".join(cells) + " |" for cells in lines]
        sections.append("\n".join(text))
    return "\n\n".join(sections) + "\n"


def comparison_tables(rows: Sequence[dict]) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Per dataset, each method run both at its defaults and at its tuned setting (``erlmr bench --tuned``):
    test accuracy, each modality's accuracy and the imbalance degree, default against tuned."""
    tables = {}
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        subset = [r for r in rows if r["dataset"] == dataset]
        labels = list(dict.fromkeys(r["method"] for r in subset))
        pairs = [(label, label + TUNED_SUFFIX) for label in labels if label + TUNED_SUFFIX in labels]
        if not pairs:
            continue
        keys = [
            (key, heading) for key, heading in table_columns(subset) if key not in ("macro_f1", "step_time_vs_joint")
        ]
        headings = ["method", "seeds", *(f"{h} {side}" for _, h in keys for side in ("default", "tuned")), "Δ accuracy"]
        lines = []
        for default, tuned in pairs:
            runs = {label: [r for r in subset if r["method"] == label] for label in (default, tuned)}
            cells = [mean_std([r.get(key) for r in runs[label]]) for key, _ in keys for label in (default, tuned)]
            gain = statistics.mean(r["accuracy"] for r in runs[tuned]) - statistics.mean(
                r["accuracy"] for r in runs[default]
            )
            seeds = f"{len(runs[default])}/{len(runs[tuned])}"
            name = default + (" (defaults best)" if any(r.get("tuned_is_default") for r in runs[tuned]) else "")
            lines.append([name, seeds, *cells, f"{gain:+.3f}"])
        tables[dataset] = (headings, lines)
    return tables


def markdown_comparison(rows: Sequence[dict]) -> str:
    """The default-against-tuned tables, or "" when no method was run both ways."""
    sections = []
    for dataset, (headings, lines) in comparison_tables(rows).items():
        text = [
            f"### {dataset}: default against tuned",
            "",
            "| " + " | ".join(headings) + " |",
            "|" + "---|" * len(headings),
        ]
        text += ["| " + " | ".join(cells) + " |" for cells in lines]
        sections.append("\n".join(text))
    return "\n\n".join(sections) + "\n" if sections else ""


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))

    def write(file) -> None:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)

    atomic_write(path, write, mode="w")


def entry_dir(out: Path, entry: Entry) -> Path:
    dataset, method, seed = entry
    return run_dir_for(out, dataset, method.folder, seed)


def check_datasets(out: Path, datasets: Sequence[str], base_config: str | None, overrides: Sequence[str]) -> None:
    """Write each dataset's ``data_check.json`` (``erlmr data check``) once, for ``erlmr report``."""
    for dataset in datasets:
        try:
            config = load_config(base_config, [*overrides, f"data.dataset={dataset}"])
        except ErlmrError:
            continue  # the grid reports a bad config for every run
        write_data_check(out / dataset, config)


def run_grid(
    entries: Sequence[Entry],
    out: Path,
    base_config: str | None,
    overrides: Sequence[str],
    jobs: int,
    progress: bool,
) -> dict[tuple[str, str, int], str]:
    """Train every unfinished entry, ``jobs`` at a time, each in a fresh process with an even share of the
    cores (see :mod:`erlmr.analysis.grid`); the failed entries' messages.

    SIGINT or SIGTERM stops the running entries, which save their state, and raises
    :class:`~erlmr.errors.TrainingInterrupted`; the same bench run again continues them.
    """
    pending = [e for e in entries if e[1].same_runs_as is None and not RunFolder(entry_dir(out, e)).finished]
    failures: dict[tuple[str, str, int], str] = {}
    children: ChildRuns[tuple[str, str, int]] = ChildRuns(process_context(), max(1, usable_cores() // jobs))
    with tqdm(
        total=len(entries), initial=len(entries) - len(pending), desc="bench", unit="run", disable=not progress
    ) as bar:
        with ForwardedStop(children) as stop:
            while children.running or (pending and stop.received is None):
                while pending and len(children.running) < jobs and stop.received is None:
                    dataset, method, seed = entry = pending.pop(0)
                    children.start((dataset, method.spec, seed), attempt, out, *entry, base_config, overrides)
                if stop.received is not None:
                    children.stop_all()  # a child started while the signal arrived
                key, error, died = children.wait()
                if stop.received is None and (error or died):
                    failures[key] = (
                        error or f"the process training it died ({died}); run the bench again to continue it"
                    )
                bar.update()
    if stop.received is not None:
        name = signal.Signals(stop.received).name
        raise TrainingInterrupted(
            f"bench stopped by {name}; the runs in progress saved their state under {out}. Continue them by "
            "running the same erlmr bench command again",
            stop.received,
        )
    return failures


@dataclass
class BenchResult:
    """What a bench made: the markdown tables, the failed entries' messages, the files it wrote."""

    table: str
    failures: dict[tuple[str, str, int], str]
    files: list[Path]


def run_bench(
    datasets: Sequence[str],
    methods: Sequence[str],
    seeds: int,
    out: str | Path,
    base_config: str | None = None,
    overrides: Sequence[str] = (),
    jobs: int = 1,
    command: str | None = None,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
) -> BenchResult:
    """Run the grid (finished runs are skipped, partial ones continued) and write ``results.md``, ``bench.json``,
    ``results.csv`` when a run finished and, per dataset, ``DATASET/data_check.json``.

    With ``shard`` (I, N), only share I of N of the grid is trained (:func:`shard_of`); the tables cover
    every finished run of the whole grid in ``out``, the other shares' included. Returns the markdown
    tables and the failed entries with their error messages.
    """
    if not datasets or not methods or seeds < 1:
        raise ConfigError("bench needs at least one dataset, one method and --seeds >= 1")
    grid = [grid_method(method) for method in methods]
    entries = [(dataset, method, seed) for dataset in datasets for method in grid for seed in range(seeds)]
    Path(out).mkdir(parents=True, exist_ok=True)
    check_datasets(Path(out), datasets, base_config, overrides)
    record = {"datasets": list(datasets), "methods": list(methods), "seeds": seeds}
    return run_entries(entries, out, base_config, overrides, jobs, command, progress, shard, record)


def run_entries(
    entries: Sequence[Entry],
    out: str | Path,
    base_config: str | None,
    overrides: Sequence[str],
    jobs: int,
    command: str | None,
    progress: bool,
    shard: tuple[int, int] | None,
    record: Mapping[str, Any],
) -> BenchResult:
    """Train this shard's share of ``entries`` and tabulate every finished one (see :func:`run_bench`).

    One bench process per shard writes a folder: a second one with the same shard (or both without one) is
    refused; benches of different shards share it (each run folder has its own lock)."""
    if jobs < 1:
        raise ConfigError("bench needs --jobs >= 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    which = "that bench" if shard is None else f"that bench (shard {shard[0]}/{shard[1]})"
    with FolderLock(
        out, "bench folder", f"wait for {which} to finish, or choose another --out", shard_lock_name(shard)
    ):
        check_finished_runs(entries, out, base_config, overrides)
        failures = run_grid(shard_of(entries, shard), out, base_config, overrides, jobs, progress)
        copy_same_runs(entries, out)
        summaries = [
            read_summary(entry_dir(out, entry)) for entry in entries if RunFolder(entry_dir(out, entry)).finished
        ]
        record = {**record, "overrides": list(overrides), "shard": None if shard is None else f"{shard[0]}/{shard[1]}"}
        table, files = write_results(out, summaries, failures, command, record)
    return BenchResult(table, failures, files)


def shard_lock_name(shard: tuple[int, int] | None) -> str:
    return LOCK_NAME if shard is None else f"{LOCK_NAME}-shard{shard[0]}of{shard[1]}"


def data_lines(summaries: Sequence[dict]) -> list[str]:
    """Each dataset's data fingerprint per seed (a hash of the splits as the runs loaded them; the validation
    split is drawn per seed, so each seed has its own): two machines that built a dataset differently
    (another espeak-ng, say) show it here before anyone compares their numbers."""
    found: dict[str, dict[int, set[str]]] = {}
    for summary in summaries:
        seeds = found.setdefault(dataset_label(summary), {})
        seeds.setdefault(summary.get("seed", 0), set()).add(summary.get("data_fingerprint") or "not recorded")
    lines = []
    for name, seeds in found.items():
        listed = ", ".join(f"{seed} {'/'.join(sorted(prints))}" for seed, prints in sorted(seeds.items()))
        differ = any(len(prints) > 1 for prints in seeds.values())
        lines.append(
            f"- data {name}: fingerprint by seed {listed}"
            + (" (**runs of one seed did not all see the same data**)" if differ else "")
        )
    return lines


def write_results(
    out: Path, summaries: Sequence[dict], failures: Mapping, command: str | None, record: Mapping
) -> tuple[str, list[Path]]:
    """Write ``results.md`` (headed by the command, machine and date), ``bench.json`` and, when a run finished,
    ``results.csv``; return the markdown tables and the files written."""
    rows = [summary_row(s) for s in summaries]
    machine = machine_description(sorted({s.get("cost", {}).get("device", "unknown") for s in summaries}))
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = [
        "# Benchmark results",
        "",
        f"- command: `{command or 'erlmr bench'}`",
        f"- machine: {machine}",
        *data_lines(summaries),
        f"- date: {date}",
        "- cells: mean ± std over seeds of test-split metrics; imbalance degree = mean |difference| of the "
        "modalities' Shapley contributions to accuracy; linear probe = test accuracy of a logistic regression on "
        "the modality's frozen features, fitted on train and chosen on validation; step time ÷ joint = mean "
        "training step time relative to joint on the same dataset (docs/metrics.md)",
        "",
    ]
    table = markdown_table(rows) if rows else "No finished run.\n"
    if comparison := markdown_comparison(rows):
        table += "\n" + comparison
    if failures:
        table += "\n### Failed runs\n\n" + "".join(f"- {'/'.join(map(str, e))}: {m}\n" for e, m in failures.items())
    files = [out / "results.md", out / "bench.json"]
    atomic_write(files[0], lambda f: f.write("\n".join(header) + "\n" + table), mode="w")
    write_json(
        files[1],
        {
            "command": command,
            "machine": machine,
            "date": date,
            **record,
            "failed": ["/".join(map(str, e)) for e in failures],
        },
    )
    if rows:
        write_csv(out / "results.csv", rows)
        files.insert(1, out / "results.csv")
    else:  # a results.csv of an earlier grid would not be this bench's
        (out / "results.csv").unlink(missing_ok=True)
    return table, files
