"""``erlmr tune``: every method tuned on the validation split with the same number of trials.

One Optuna study per (dataset, method), in a shared storage (:mod:`erlmr.tuning.storage`). A study's
first trial is the method's default setting; the others come from a seeded TPE sampler (Bergstra,
Bardenet, Bengio, Kégl, "Algorithms for Hyper-Parameter Optimization", NeurIPS 2011), and a median
pruner stops a trial whose per-epoch validation score falls below the median of the earlier trials at
the same epoch. Each trial is an ordinary run folder, ``OUT/<dataset>/<method>/trial<N>/``, with a
``trial.json`` beside its files. Any number of workers (processes, hosts) may run on one study: the
budget counts finished, pruned and running trials, so together they run exactly ``trials`` of them;
the trial of a killed worker goes stale (no heartbeat) and is marked FAIL, and another takes its place.
The protocol is docs/protocol.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from tqdm import tqdm

from ..analysis.bench import folder_name, method_overrides, parse_method_spec
from ..analysis.runs import TRIAL_MARKER, with_options
from ..config import Config, load_config
from ..errors import ConfigError, TrainingDivergedError, TrialPruned
from ..training.checkpoint import write_json
from ..training.trainer import train
from . import results
from .results import BUDGET_KEY, DEFAULT_KEY, DIVERGED_KEY, SETUP_KEY, SURPLUS_KEY, WORKER_KEY
from .space import UserSpace, as_overrides, check_user_space, default_values, describe, method_space, suggest
from .storage import default_storage, import_optuna, open_storage, shown

#: config keys that say where and how a run executes, not what it computes: workers may differ in them
LOCAL_KEYS = {"out", "run_dir", "quiet", "device", "num_workers", "tensorboard"}
#: a trial measures no linear probe and draws no feature map: both read the test split (docs/metrics.md)
TRIAL_KEYS = ("train.linear_probe=false", "train.feature_maps=false")


@dataclass(frozen=True)
class Metric:
    """A validation quantity a study optimises: its key in the epoch records and in ``summary["val"]``."""

    name: str
    direction: str
    summary_key: str


METRICS = {
    m.name: m
    for m in (
        Metric("val_accuracy", "maximize", "accuracy"),
        Metric("val_macro_f1", "maximize", "macro_f1"),
        Metric("val_imbalance_degree", "minimize", "imbalance_degree"),
    )
}


def metric_named(name: str) -> Metric:
    if "test" in name.lower():
        raise ConfigError(
            f"--metric {name} is a test-split quantity: tuning selects on the validation split only, so that the "
            f"test split stays unseen until the final benchmark (docs/protocol.md). Valid: {', '.join(METRICS)}"
        )
    if name not in METRICS:
        raise ConfigError(f"unknown --metric {name!r}; valid (validation split): {', '.join(METRICS)}")
    return METRICS[name]


@dataclass(frozen=True)
class TuneSettings:
    trials: int
    metric: Metric
    out: Path
    storage: str | None = None
    study_prefix: str = ""
    heartbeat: int = 60
    prune: bool = True
    prune_warmup: int | None = None
    prune_startup: int = 5
    progress: bool = True


@dataclass
class Plan:
    """One method's study: what is searched, from which config, and where its trials go."""

    spec: str
    space: dict
    config: Config
    overrides: list[str]
    study_name: str
    folder: Path
    setup: dict


def comparable(config: Config) -> dict:
    """The config without the keys that only say where and how a run executes."""
    data = config.to_dict()
    data["train"] = {k: v for k, v in data["train"].items() if k not in LOCAL_KEYS}
    return data


def plan_method(
    spec: str, base_config: str | None, overrides: Sequence[str], user: UserSpace, settings: TuneSettings
) -> Plan:
    """Everything one method's study needs, checked before any trial runs."""
    name, fixed = parse_method_spec(spec)
    method_keys = method_overrides(spec)
    config = load_config(base_config, [*overrides, *method_keys])
    space = method_space(name, fixed, user)
    if not space:
        raise ConfigError(f"method {spec!r} has nothing left to tune: its search space is empty; add keys with --space")
    dataset = with_options(config.data.dataset, config.data.options)
    setup = {
        "dataset": config.data.dataset,
        "dataset_label": dataset,
        "method": spec,
        "metric": settings.metric.name,
        "space": describe(space),
        "config": comparable(config),
    }
    return Plan(
        spec,
        space,
        config,
        [*overrides, *method_keys],
        f"{settings.study_prefix}{dataset}/{spec}",
        settings.out / folder_name(config.data.dataset) / folder_name(spec),
        json.loads(json.dumps(setup)),
    )


def differences(old: Any, new: Any, path: str = "") -> list[str]:
    """The keys (dotted) whose values differ between two JSON-like values."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            d for key in sorted(set(old) | set(new)) for d in differences(old.get(key), new.get(key), f"{path}{key}.")
        ]
    return [] if old == new else [f"{path.rstrip('.')}: {old!r} in the study, {new!r} now"]


def open_study(optuna: Any, storage: Any, plan: Plan, settings: TuneSettings) -> Any:
    """Create the study (its first trial: the defaults) or load it, refusing one made for other settings."""
    study = optuna.create_study(
        storage=storage,
        study_name=plan.study_name,
        direction=settings.metric.direction,
        load_if_exists=True,
        pruner=make_pruner(optuna, plan.config, settings),
    )
    recorded = study.user_attrs.get(SETUP_KEY)
    if recorded is not None and recorded != plan.setup:
        changed = differences(recorded, plan.setup)
        assert settings.storage is not None, "tune() sets the storage before it opens the studies"
        raise ConfigError(
            f"study {plan.study_name!r} in {shown(settings.storage)} was made with other settings "
            f"({'; '.join(changed[:5])}); "
            "re-run with the study's settings, or tune into another --out, --storage or --study"
        )
    study.set_user_attr(BUDGET_KEY, settings.trials)
    if recorded is None:
        study.set_user_attr(SETUP_KEY, plan.setup)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # enqueue_trial is "experimental"
            study.enqueue_trial(
                default_values(plan.space, plan.config), user_attrs={DEFAULT_KEY: True}, skip_if_exists=True
            )
    return study


def make_pruner(optuna: Any, config: Config, settings: TuneSettings) -> Any:
    if not settings.prune:
        return optuna.pruners.NopPruner()
    warmup = settings.prune_warmup if settings.prune_warmup is not None else max(1, config.train.epochs // 4)
    return optuna.pruners.MedianPruner(n_startup_trials=settings.prune_startup, n_warmup_steps=warmup)


def counted(trials: Sequence[Any], optuna: Any, waiting: bool = False) -> list[Any]:
    """The trials that use up the budget: finished, pruned or running (and, with ``waiting``, those queued
    to run next), never surplus ones."""
    state = optuna.trial.TrialState
    states = (state.COMPLETE, state.PRUNED, state.RUNNING) + ((state.WAITING,) if waiting else ())
    return [t for t in trials if t.state in states and not t.user_attrs.get(SURPLUS_KEY)]


def budget_left(optuna: Any, study: Any, trials: int) -> int:
    """Trials still to start, after marking FAIL the running trials whose worker stopped beating. Queued
    trials do not count here: the next one asked for is a queued one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fail_stale_trials is "experimental"
        optuna.storages.fail_stale_trials(study)
    return trials - len(counted(study.get_trials(deepcopy=False), optuna))


class SurplusTrial(Exception):
    """A trial another worker's made unnecessary: the budget was spent between the check and the ask."""


def trial_objective(optuna: Any, plan: Plan, settings: TuneSettings, config_path: str | None):
    def objective(trial: Any) -> float:
        # Trial numbers follow creation order, so the first `trials` counted trials are the budget; a later
        # one was asked for in a race with another worker and gives its place up.
        earlier = [
            t for t in counted(trial.study.get_trials(deepcopy=False), optuna, waiting=True) if t.number < trial.number
        ]
        if len(earlier) >= settings.trials:
            trial.set_user_attr(SURPLUS_KEY, True)
            raise SurplusTrial()
        trial.set_user_attr(WORKER_KEY, f"{socket.gethostname()}:{os.getpid()}")
        params = suggest(trial, plan.space)
        run_dir = plan.folder / f"trial{trial.number}"
        record = {"study": plan.study_name, "number": trial.number, "params": params, "state": "RUNNING"}
        mark(run_dir, record)
        keys = [
            *plan.overrides,
            *as_overrides(params),
            f"train.run_dir={json.dumps(str(run_dir))}",
            "train.quiet=true",
            *TRIAL_KEYS,
        ]
        try:
            result = train(load_config(config_path, keys), on_epoch=reporter(trial, settings.metric))
        except TrialPruned as stop:
            mark(run_dir, {**record, "state": "PRUNED", "reason": str(stop)})
            raise optuna.TrialPruned(str(stop)) from None
        except TrainingDivergedError as error:  # a setting that diverges used its trial: pruned, never retried
            trial.set_user_attr(DIVERGED_KEY, str(error))
            mark(run_dir, {**record, "state": "PRUNED", "reason": str(error)})
            raise optuna.TrialPruned(str(error)) from None
        withhold_test(run_dir)
        value = result.summary["val"][settings.metric.summary_key]
        mark(run_dir, {**record, "state": "COMPLETE", "value": value})
        return value

    return objective


def withhold_test(run_dir: Path) -> None:
    """Delete the test metrics the trainer wrote into a trial's ``summary.json``: no one picks a setting
    by them (docs/protocol.md); ``erlmr bench --tuned`` measures the test split once, at the end."""
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text())
    summary.pop("test", None)
    write_json(path, {**summary, "test_withheld": "a tuning trial: selection sees the validation split only"})


def mark(run_dir: Path, record: Mapping[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / TRIAL_MARKER, dict(record))


def reporter(trial: Any, metric: Metric):
    """The trainer's per-epoch hook: report the validation score, stop the run when the pruner says so."""

    def on_epoch(epoch: int, record: Mapping[str, Any]) -> None:
        value = record.get(metric.name)
        if isinstance(value, (int, float)) and math.isfinite(value):
            trial.report(value, epoch)
        if trial.should_prune():
            raise TrialPruned(f"pruned after epoch {epoch + 1}: {metric.name} below the median of earlier trials")

    return on_epoch


def run_study(optuna: Any, study: Any, plan: Plan, settings: TuneSettings, config_path: str | None) -> None:
    """Run trials one at a time until the study holds its budget (with the other workers' trials), then
    wait for the other workers' running trials, so that the study is finished when this returns; a
    running trial that goes stale meanwhile is replaced."""
    objective = trial_objective(optuna, plan, settings, config_path)
    state = optuna.trial.TrialState
    with tqdm(total=settings.trials, desc=plan.spec, unit="trial", disable=not settings.progress) as bar:
        while True:
            trials = counted(study.get_trials(deepcopy=False), optuna)
            bar.n = min(sum(t.state in (state.COMPLETE, state.PRUNED) for t in trials), settings.trials)
            bar.refresh()
            if budget_left(optuna, study, settings.trials) > 0:
                # A seed per trial count: one worker repeats its run exactly; several workers do not draw alike.
                seed = (plan.config.train.seed * 1_000_003 + len(study.get_trials(deepcopy=False))) % 2**32
                study.sampler = optuna.samplers.TPESampler(seed=seed)
                study.optimize(objective, n_trials=1, catch=(SurplusTrial,))
            elif any(t.state == state.RUNNING for t in trials):
                time.sleep(min(settings.heartbeat, 5))
            else:
                return


def tune(
    methods: Sequence[str],
    base_config: str | None,
    overrides: Sequence[str],
    user: UserSpace,
    settings: TuneSettings,
    command: str | None = None,
) -> list[dict]:
    """Tune every method with the same budget; write ``tuning.json`` and ``tuning.md`` into ``settings.out``
    and return the studies' records (:func:`erlmr.tuning.results.study_record`)."""
    if not methods:
        raise ConfigError("erlmr tune needs at least one --method")
    if settings.trials < 1 or settings.heartbeat < 1:
        raise ConfigError("erlmr tune needs --trials >= 1 and --heartbeat >= 1 second")
    check_user_space(user)
    plans = [plan_method(spec, base_config, overrides, user, settings) for spec in methods]
    settings.out.mkdir(parents=True, exist_ok=True)
    url = settings.storage or default_storage(settings.out)
    settings = dataclasses.replace(settings, storage=url)
    optuna = import_optuna()
    storage = open_storage(url, settings.heartbeat)
    studies = [open_study(optuna, storage, plan, settings) for plan in plans]
    for plan, study in zip(plans, studies):
        run_study(optuna, study, plan, settings, base_config)
    records = [results.study_record(study) for study in studies]
    results.write_tuning(settings.out, records, shown(url), command)
    return records
