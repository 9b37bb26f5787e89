"""What tuning found: study records, the summary table, ``tuning.json``, and the tuned benchmark grid.

A study record is plain JSON (``OUT/tuning.json`` holds one per study), so ``erlmr report`` and
``erlmr bench --tuned`` read tuning results without Optuna when the storage cannot be reached.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Sequence

import yaml

from ..analysis.bench import BenchResult, GridMethod, folder_name, run_entries
from ..analysis.cost import machine_description
from ..analysis.runs import TUNED_SUFFIX, with_options
from ..errors import ConfigError, DataError
from ..training.checkpoint import atomic_write, write_json
from .space import as_overrides

TUNING_FILE = "tuning.json"
#: study user attributes: what the study tunes (fixed when it is made) and its budget (the last run's)
SETUP_KEY, BUDGET_KEY = "erlmr:setup", "erlmr:budget"
#: trial user attributes: the study's first trial (the defaults), a trial past the budget, the worker
DEFAULT_KEY, SURPLUS_KEY, WORKER_KEY, DIVERGED_KEY = "erlmr:default", "erlmr:surplus", "erlmr:worker", "erlmr:diverged"


def trial_record(trial: Any) -> dict:
    attrs = trial.user_attrs
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "params": dict(trial.params),
        "intermediate": sorted(trial.intermediate_values.items()),
        "default": bool(attrs.get(DEFAULT_KEY)),
        "diverged": attrs.get(DIVERGED_KEY),
        "worker": attrs.get(WORKER_KEY),
    }


def study_record(study: Any) -> dict:
    """One study as JSON: its setup, every trial but surplus ones, the best and the default trial."""
    setup = study.user_attrs[SETUP_KEY]
    trials = [trial_record(t) for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(SURPLUS_KEY)]
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    maximize = study.direction.name == "MAXIMIZE"
    best = max(complete, key=lambda t: t["value"] if maximize else -t["value"]) if complete else None
    return {
        "study": study.study_name,
        **setup,
        "direction": study.direction.name.lower(),
        "budget": study.user_attrs.get(BUDGET_KEY),
        "trials": trials,
        "best": best,
        "default": next((t for t in trials if t["default"]), None),
    }


def count(record: dict, state: str) -> int:
    return sum(t["state"] == state for t in record["trials"])


def compact(params: dict) -> str:
    return ", ".join(f"{key.removeprefix('method.options.')}={_short(value)}" for key, value in params.items())


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def summary_table(records: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """One line per study: trials run, the default's and the best validation score, the best setting."""
    headings = [
        "dataset",
        "method",
        "trials (complete/pruned/failed of budget)",
        "metric",
        "default",
        "best",
        "best setting",
    ]
    lines = []
    for r in records:
        default, best = r["default"], r["best"]
        lines.append(
            [
                r["dataset_label"],
                r["method"],
                f"{count(r, 'COMPLETE')}/{count(r, 'PRUNED')}/{count(r, 'FAIL')} of {r['budget']}",
                r["metric"],
                "n/a" if default is None or default["value"] is None else f"{default['value']:.3f}",
                "n/a" if best is None else f"{best['value']:.3f} (trial {best['number']})",
                "n/a" if best is None else compact(best["params"]),
            ]
        )
    return headings, lines


def markdown(headings: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    rows = ["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
    return "\n".join(rows + ["| " + " | ".join(cells) + " |" for cells in lines]) + "\n"


def write_tuning(out: Path, records: Sequence[dict], storage: str, command: str | None) -> str:
    """Write ``tuning.json`` and ``tuning.md`` (headed by the command, machine and date); the table."""
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = machine_description([])
    write_json(
        out / TUNING_FILE,
        {"storage": storage, "command": command, "machine": machine, "date": date, "studies": list(records)},
    )
    table = markdown(*summary_table(records))
    header = (
        f"# Tuning results\n\n- command: `{command or 'erlmr tune'}`\n- machine: {machine}\n- date: {date}\n"
        f"- storage: {storage}\n- scores: the validation metric of each trial's best-validation checkpoint\n\n"
    )
    atomic_write(out / "tuning.md", lambda f: f.write(header + table), mode="w")
    return table


def read_tuning_files(root: Path) -> list[dict]:
    """The study records of every ``tuning.json`` at or below ``root``, each study once (the last read)."""
    studies: dict[str, dict] = {}
    for path in sorted(Path(root).rglob(TUNING_FILE)):
        for record in json.loads(path.read_text()).get("studies", []):
            studies[record["study"]] = record
    return list(studies.values())


def load_tuning(source: str, heartbeat: int = 60) -> list[dict]:
    """The studies of a tune output folder (read again from its own ``study.db``, or from its storage
    when that is a journal file or a database URL without a password, else from its ``tuning.json``) or
    of a storage URL (every study ``erlmr tune`` made in it)."""
    from .storage import default_storage, import_optuna, open_storage

    folder = Path(source)
    if folder.is_dir():
        path = folder / TUNING_FILE
        if not path.is_file():
            raise DataError(
                f"{folder} holds no {TUNING_FILE}: give the --out folder of 'erlmr tune' or the study storage URL"
            )
        data = json.loads(path.read_text())
        source = default_storage(folder) if (folder / "study.db").exists() else data["storage"]
        moved = source.startswith("sqlite:///") and not Path(source[len("sqlite:///") :]).exists()
        if "***" in source or moved:
            return data["studies"]  # the password is not recorded, or the SQLite file is gone
        names = [r["study"] for r in data["studies"]]
    else:
        names = None
    optuna = import_optuna()
    storage = open_storage(source, heartbeat)
    studies = [
        optuna.load_study(study_name=name, storage=storage)
        for name in optuna.get_all_study_names(storage)
        if names is None or name in names
    ]
    records = [study_record(s) for s in studies if SETUP_KEY in s.user_attrs]
    if not records:
        raise DataError(f"no study made by 'erlmr tune' in {source}")
    return records


def tuned_grid(records: Sequence[dict], out: Path) -> list[tuple[str, GridMethod, GridMethod]]:
    """(dataset, default, tuned) for each study with a finished trial: the method at its defaults and at
    its best setting, both from the study's config (written to ``out/tuned/<study>.yaml``)."""
    (out / "tuned").mkdir(parents=True, exist_ok=True)
    names = [(r["dataset"], r["method"]) for r in records]
    # Where `erlmr bench` puts a method's runs, unless studies of the same method on variants of one
    # dataset (other data options) would share that folder.
    return [
        (record["dataset"], *tuned_pair(record, out, names.count((record["dataset"], record["method"])) > 1))
        for record in records
        if record["best"] is not None
    ]


def tuned_pair(record: dict, out: Path, shared: bool) -> tuple[GridMethod, GridMethod]:
    """One study's method at its defaults and at its best trial's setting, its config written beside."""
    best = record["best"]
    config_path = out / "tuned" / f"{folder_name(record['study'])}.yaml"

    def write_config(f: IO[str], config: dict = record["config"]) -> None:
        f.write(yaml.safe_dump(config, sort_keys=False))

    atomic_write(config_path, write_config, mode="w")
    method = record["config"]["method"]
    label = with_options(method["name"], method["options"])
    folder = folder_name(record["method"] + (f" {record['dataset_label']}" if shared else ""))
    tuned = {
        "label": label + TUNED_SUFFIX,
        "study": record["study"],
        "trial": best["number"],
        "value": best["value"],
        "metric": record["metric"],
        "params": best["params"],
    }
    default = GridMethod(label, (), folder, str(config_path))
    overrides = tuple(as_overrides(best["params"]))
    # The defaults won the tuning: their runs are the tuned runs too (training them again gives the same numbers).
    same = folder if best["default"] else None
    return default, GridMethod(label + TUNED_SUFFIX, overrides, f"{folder}-tuned", str(config_path), tuned, None, same)


def check_finished(records: Sequence[dict], source: str) -> None:
    """Every study has run its whole budget and none of its trials is still running."""
    unfinished = [
        f"{r['study']} ({count(r, 'COMPLETE') + count(r, 'PRUNED')} of {r['budget']} trials done, "
        f"{count(r, 'RUNNING')} running)"
        for r in records
        if count(r, "RUNNING") or count(r, "COMPLETE") + count(r, "PRUNED") < (r["budget"] or 0)
    ]
    if unfinished:
        raise DataError(
            f"tuning in {source} is not finished: {'; '.join(unfinished)}. Wait for 'erlmr tune' to return, or run "
            "the same erlmr tune command again to finish it"
        )


def run_tuned_bench(
    source: str,
    seeds: int,
    out: str | Path,
    overrides: Sequence[str],
    jobs: int,
    command: str | None,
    progress: bool,
    shard: tuple[int, int] | None,
) -> BenchResult:
    """Train every tuned method at its defaults and at its best setting over ``seeds`` seeds into ``out``
    (resumable, shardable as ``erlmr bench``); the study records go to ``out/tuning.json`` for the report."""
    out = Path(out)
    records = load_tuning(source)
    check_finished(records, source)
    grid = tuned_grid(records, out)
    if seeds < 1:
        raise ConfigError("bench --tuned needs --seeds >= 1")
    if not grid:
        raise DataError(f"no study in {source} has a finished trial yet; let 'erlmr tune' finish one first")
    if Path(source).resolve() != out.resolve():  # the tune folder's own tuning.json is already there
        write_json(out / TUNING_FILE, {"storage": str(source), "studies": list(records)})
    entries = [(dataset, method, seed) for dataset, *pair in grid for method in pair for seed in range(seeds)]
    record = {"tuned": str(source), "methods": [method.spec for _, *pair in grid for method in pair], "seeds": seeds}
    return run_entries(entries, out, None, overrides, jobs, command, progress, shard, record)
