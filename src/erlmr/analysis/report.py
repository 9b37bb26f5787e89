"""An HTML report of a run or bench folder: summary tables and matplotlib plots.

Every plot is written as a PNG file next to ``report.html`` and embedded in it as a base64 data URI, so
the HTML file alone opens offline, and the PNGs can be reused elsewhere (a README, a paper). The feature
maps are drawn from each run's ``feature_maps.npz`` (:mod:`erlmr.analysis.features`): the report itself
fits nothing.
"""

from __future__ import annotations

import base64
import html
import json
import re
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from ..extras import require
from ..training.run_folder import FEATURE_MAPS, RunFolder
from .bench import JOINT, comparison_tables, summary_row, summary_tables
from .datacheck import MODALITY_HEADINGS, SPLIT_HEADINGS, modality_rows, probe_table, split_rows
from .runs import FinishedRun, dataset_label, find_runs, method_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MethodRuns = dict[str, list[FinishedRun]]
REPORT = ("report", "the report")  # matplotlib is the report's optional package: pip install 'erlmr[report]'


def group_runs(runs: Sequence[FinishedRun]) -> dict[str, MethodRuns]:
    """dataset label → method → its runs (one per seed), in first-seen order with joint first."""
    groups: dict[str, MethodRuns] = {}
    for run in runs:
        groups.setdefault(dataset_label(run.summary), {}).setdefault(method_label(run.summary), []).append(run)
    return {
        label: dict(sorted(methods.items(), key=lambda item: item[0] != JOINT)) for label, methods in groups.items()
    }


def epoch_series(
    runs: Sequence[FinishedRun], value: Callable[[dict], float | None]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean and std over seeds of ``value(epoch record)``, over the epochs every seed has."""
    series = [[value(r) for r in run.epochs] for run in runs]
    series = [s for s in series if s and all(v is not None for v in s)]
    if not series:
        return None
    length = min(len(s) for s in series)
    stacked = np.array([s[:length] for s in series], dtype=float)
    return stacked.mean(0), stacked.std(0)


def plot_band(axes, series: tuple[np.ndarray, np.ndarray], label: str, **style) -> None:
    mean, std = series
    epochs = np.arange(1, len(mean) + 1)
    line = axes.plot(epochs, mean, label=label, **style)[0]
    axes.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.15, linewidth=0)
    axes.xaxis.set_major_locator(require("matplotlib.ticker", *REPORT).MaxNLocator(integer=True))


def label_axes(axes, legend: bool = True, **labels) -> None:
    axes.set(**labels)
    axes.grid(alpha=0.3)
    if legend:
        axes.legend(fontsize="small")


def new_figure(**options) -> Figure:
    """A matplotlib Figure drawn without pyplot, so no display backend is involved."""
    return require("matplotlib.figure", *REPORT).Figure(**options)


def panel_grid(count: int, width: float = 4.2, height: float = 3.2) -> tuple[Figure, list]:
    columns = min(count, 3)
    rows = -(-count // columns)
    figure = new_figure(figsize=(width * columns, height * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for unused in axes[count:]:
        unused.set_visible(False)
    return figure, list(axes[:count])


def validation_accuracy_figure(methods: MethodRuns) -> Figure:
    figure, panels = panel_grid(len(methods))
    for axes, (method, runs) in zip(panels, methods.items()):
        fused = epoch_series(runs, lambda r: r.get("val_accuracy"))
        if fused is not None:
            plot_band(axes, fused, "fused", color="black", linewidth=2)
        for modality in runs[0].summary["modalities"]:

            def modality_accuracy(r: dict, m: str = modality) -> float | None:
                return r.get("val_modality_accuracy", {}).get(m)

            series = epoch_series(runs, modality_accuracy)
            if series is not None:
                plot_band(axes, series, modality)
        label_axes(axes, title=method, xlabel="epoch", ylabel="validation accuracy", ylim=(0, 1.02))
    return figure


def imbalance_curve_figure(methods: MethodRuns) -> Figure:
    figure = new_figure(figsize=(6, 3.6), layout="constrained")
    axes = figure.subplots()
    for method, runs in methods.items():
        series = epoch_series(runs, lambda r: r.get("val_imbalance_degree"))
        if series is not None:
            plot_band(axes, series, method)
    label_axes(axes, xlabel="epoch", ylabel="imbalance degree (validation)")
    return figure


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def contribution_figure(methods: MethodRuns) -> Figure:
    modalities = next(iter(methods.values()))[0].summary["modalities"]
    figure = new_figure(figsize=(max(6, 1.1 * len(methods) * len(modalities)), 3.8), layout="constrained")
    axes = figure.subplots()
    width = 0.8 / len(modalities)
    positions = np.arange(len(methods))
    for i, modality in enumerate(modalities):
        stats = [
            mean_and_std([run.summary["test"].get("contribution", {}).get(modality, np.nan) for run in runs])
            for runs in methods.values()
        ]
        axes.bar(
            positions + (i - (len(modalities) - 1) / 2) * width,
            [m for m, _ in stats],
            width,
            yerr=[s for _, s in stats],
            capsize=3,
            label=modality,
        )
    axes.axhline(0, color="black", linewidth=0.8)
    axes.set_xticks(positions, list(methods), rotation=20, ha="right")
    label_axes(axes, ylabel="Shapley contribution to test accuracy")
    return figure


def cost_figure(methods: MethodRuns) -> Figure:
    figure = new_figure(figsize=(6, 4), layout="constrained")
    axes = figure.subplots()
    for method, runs in methods.items():
        times = [run.summary.get("cost", {}).get("step_time_s") for run in runs]
        times = [1000 * t for t in times if t is not None]
        if not times:
            continue
        time_mean, time_std = mean_and_std(times)
        acc_mean, acc_std = mean_and_std([run.summary["test"]["accuracy"] for run in runs])
        axes.errorbar(time_mean, acc_mean, xerr=time_std, yerr=acc_std, fmt="o", capsize=3, label=method)
        axes.annotate(method, (time_mean, acc_mean), textcoords="offset points", xytext=(5, 5), fontsize="small")
    label_axes(axes, legend=False, xlabel="training step time (ms)", ylabel="test accuracy")
    return figure


def pareto_methods(methods: MethodRuns) -> MethodRuns:
    """The methods whose epoch records carry ERL-MR's phase cosine (erlmr and its compositions)."""
    return {
        m: runs for m, runs in methods.items() if any("phase_cosine" in r.get("method", {}) for r in runs[0].epochs)
    }


def erlmr_figure(methods: MethodRuns) -> Figure:
    figure = new_figure(figsize=(10, 3.6), layout="constrained")
    cosine_axes, weight_axes = figure.subplots(1, 2)
    for method, runs in methods.items():
        series = epoch_series(runs, lambda r: r.get("method", {}).get("phase_cosine"))
        if series is not None:
            plot_band(cosine_axes, series, method)
        for key, style in (("pareto_weight_fusion", "-"), ("pareto_weight_mmc", "--")):

            def pareto_weight(r: dict, k: str = key) -> float | None:
                return r.get("method", {}).get(k)

            series = epoch_series(runs, pareto_weight)
            if series is not None:
                plot_band(weight_axes, series, f"{method}: {key.removeprefix('pareto_weight_')}", linestyle=style)
    label_axes(cosine_axes, xlabel="epoch", ylabel="phase cosine (train mean)", title="phase alignment")
    label_axes(
        weight_axes,
        xlabel="epoch",
        ylabel="Pareto weight (train mean)",
        title="fusion CE vs MMC weight",
        ylim=(-0.03, 1.03),
    )
    return figure


def confusion_figure(methods: MethodRuns) -> Figure:
    classes = next(iter(methods.values()))[0].summary["classes"]
    figure, panels = panel_grid(
        len(methods), width=max(3.6, 0.45 * len(classes) + 1.6), height=max(3.2, 0.45 * len(classes) + 1.2)
    )
    for axes, (method, runs) in zip(panels, methods.items()):
        counts = sum(np.array(run.summary["test"]["confusion_matrix"], dtype=float) for run in runs)
        rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
        axes.imshow(rates, vmin=0, vmax=1, cmap="Blues")
        if len(classes) <= 12:
            for (true, predicted), rate in np.ndenumerate(rates):
                axes.text(
                    predicted,
                    true,
                    f"{rate:.2f}",
                    ha="center",
                    va="center",
                    fontsize="x-small",
                    color="white" if rate > 0.5 else "black",
                )
        ticks = np.arange(len(classes))
        axes.set_xticks(ticks, classes, rotation=90, fontsize="x-small")
        axes.set_yticks(ticks, classes, fontsize="x-small")
        axes.set(title=f"{method} ({len(runs)} seed{'s' * (len(runs) > 1)})", xlabel="predicted", ylabel="true")
    return figure


LEGEND_CLASSES = 20  # more classes than this get colours without a legend


def class_colours(count: int) -> list:
    """One colour per class: the qualitative tab10/tab20 palettes, a rainbow beyond 20 classes."""
    name = "tab10" if count <= 10 else "tab20" if count <= 20 else "turbo"
    palette = require("matplotlib", *REPORT).colormaps[name].resampled(count)
    return [palette(i) for i in range(count)]


def feature_map_figure(maps: dict[str, np.ndarray], method: str) -> Figure:
    """One t-SNE scatter per modality of ``feature_maps.npz``, coloured by class, with the class legend."""
    classes = [str(c) for c in maps["classes"]]
    colours = class_colours(len(classes))
    figure, panels = panel_grid(len(maps["modalities"]), width=4.0, height=4.0)
    for axes, modality, points in zip(panels, maps["modalities"], maps["coordinates"]):
        for label, name in enumerate(classes):
            chosen = maps["labels"] == label
            axes.scatter(points[chosen, 0], points[chosen, 1], s=9, color=colours[label], label=name, linewidths=0)
        dead = not np.ptp(points)  # constant features: every point at the origin (erlmr.analysis.features)
        axes.set(title=f"{method}: {modality}" + (" (constant features: no map)" * dead), xticks=[], yticks=[])
    if len(classes) <= LEGEND_CLASSES:
        handles, names = panels[0].get_legend_handles_labels()
        figure.legend(handles, names, loc="outside right upper", title="class", fontsize="small", markerscale=1.5)
    return figure


def feature_map_caption(method: str, run: FinishedRun, maps: dict[str, np.ndarray]) -> str:
    """What the map shows, and where, on what and when it was computed."""
    classes = len(maps["classes"])
    legend = "" if classes <= LEGEND_CLASSES else f" (colour = class index, {classes} classes)"
    made = datetime.fromtimestamp((run.path / FEATURE_MAPS).stat().st_mtime, timezone.utc).strftime("%Y-%m-%d")
    device = run.summary.get("cost", {}).get("device", "an unknown device")
    return (
        f"{method}, seed {run.summary['seed']}: t-SNE of each modality's fusion-head input on "
        f"{maps['coordinates'].shape[1]} test samples, coloured by class{legend}; computed at the end of "
        f"training ({run.path}) on {device}, {made}"
    )


def feature_map_plots(methods: MethodRuns) -> list[tuple[str, str, Figure]]:
    """Per method, the feature maps of its first seed's run, if it has them (``train.feature_maps``)."""
    plots = []
    for method, runs in methods.items():
        run = min(runs, key=lambda r: r.summary["seed"])
        maps = RunFolder(run.path).read_feature_maps()
        if maps is not None:
            caption = feature_map_caption(method, run, maps)
            plots.append((f"feature-map-{slug(method)}", caption, feature_map_figure(maps, method)))
    return plots


def trials_figure(records: Sequence[dict]) -> Figure:
    """Per tuned method: each trial's validation score by trial number (pruned trials at their last
    reported epoch), the default setting's trial ringed, and the best score so far."""
    figure, panels = panel_grid(len(records))
    for axes, record in zip(panels, records):
        done = [t for t in record["trials"] if t["state"] == "COMPLETE"]
        pruned = [t for t in record["trials"] if t["state"] == "PRUNED" and t["intermediate"]]
        axes.scatter([t["number"] for t in done], [t["value"] for t in done], label="complete", zorder=3)
        axes.scatter(
            [t["number"] for t in pruned],
            [t["intermediate"][-1][1] for t in pruned],
            marker="x",
            color="gray",
            label="pruned (last epoch)",
            zorder=3,
        )
        defaults = [t for t in done if t["default"]]
        axes.scatter(
            [t["number"] for t in defaults],
            [t["value"] for t in defaults],
            s=160,
            facecolors="none",
            edgecolors="black",
            label="defaults",
            zorder=4,
        )
        if done:
            pick = np.maximum.accumulate if record["direction"] == "maximize" else np.minimum.accumulate
            axes.step(
                [t["number"] for t in done],
                pick([t["value"] for t in done]),
                where="post",
                color="black",
                linewidth=1,
                label="best so far",
            )
        axes.xaxis.set_major_locator(require("matplotlib.ticker", *REPORT).MaxNLocator(integer=True))
        label_axes(axes, title=record["method"], xlabel="trial", ylabel=record["metric"])
    return figure


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "dataset"


def dataset_plots(methods: MethodRuns) -> list[tuple[str, str, Figure]]:
    """(file stem, caption, figure) of every plot for one dataset."""
    plots = [
        (
            "val-accuracy",
            "Validation accuracy per epoch: fused and each modality's own logits (mean ± std over seeds)",
            validation_accuracy_figure(methods),
        ),
        ("imbalance", "Imbalance degree on the validation split per epoch", imbalance_curve_figure(methods)),
        (
            "contributions",
            "Shapley contribution of each modality to test accuracy (mean ± std over seeds)",
            contribution_figure(methods),
        ),
        ("accuracy-vs-step-time", "Test accuracy against mean training step time", cost_figure(methods)),
    ]
    if erlmr := pareto_methods(methods):
        plots.append(
            ("erlmr-phase-pareto", "ERL-MR: phase cosine and Pareto weights over training", erlmr_figure(erlmr))
        )
    if all("confusion_matrix" in run.summary["test"] for runs in methods.values() for run in runs):
        plots.append(
            ("confusion", "Test confusion matrices, rows normalised (summed over seeds)", confusion_figure(methods))
        )
    return plots + feature_map_plots(methods)


STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1300px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 1.5em 0; } img { max-width: 100%; } figcaption { color: #555; font-size: 0.9em; }
"""


def html_table(headings: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headings)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in lines)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def embedded_figure(out: Path, name: str, caption: str, figure: Figure) -> str:
    """Save ``figure`` as ``out/name`` and return it as an HTML figure with the PNG inlined."""
    figure.savefig(out / name, format="png", dpi=100)
    encoded = base64.b64encode((out / name).read_bytes()).decode("ascii")
    return (
        f"<figure><img src='data:image/png;base64,{encoded}' alt='{html.escape(caption)}' data-file='{name}'>"
        f"<figcaption>{html.escape(caption)} ({name})</figcaption></figure>"
    )


def tuning_section(records: Sequence[dict], out: Path) -> list[str]:
    """The tuning results: the best setting per method, and each method's validation score over trials."""
    from ..tuning.results import summary_table

    parts = ["<h2>Tuning (validation split)</h2>", html_table(*summary_table(records))]
    for label in dict.fromkeys(r["dataset_label"] for r in records):
        studies = [r for r in records if r["dataset_label"] == label]
        caption = f"{label}: validation score of every trial (the first trial is the defaults), best so far as a line"
        parts.append(embedded_figure(out, f"{slug(label)}-tuning-trials.png", caption, trials_figure(studies)))
    return parts


def data_checks(source: Path) -> dict[str, dict]:
    """Dataset label → the ``data_check.json`` (``erlmr bench`` writes one per dataset) under ``source``."""
    checks = {}
    for path in sorted(source.rglob("data_check.json")):
        check = json.loads(path.read_text())
        checks[dataset_label({"dataset": check["dataset"], "data_options": check.get("data_options")})] = check
    return checks


def data_check_html(check: dict) -> str:
    """The data check's tables and warnings (``erlmr data check``)."""
    parts = [
        f"<h3>Data check</h3><p>Training normalises inputs: <code>{html.escape(check['normalization'])}</code> "
        f"(data.normalize={html.escape(check['normalize_setting'])}); checked in {check['seconds']:.1f} s.</p>",
        html_table(MODALITY_HEADINGS, modality_rows(check)),
        html_table(SPLIT_HEADINGS, split_rows(check)),
    ]
    probe = check["probe"]
    if "skipped" not in probe:
        used = "; ".join(f"{m}: {r}" for m, r in probe["representation"].items())
        parts.append(
            f"<p>Probe: logistic regression on standardised features ({html.escape(used)}), fit on "
            f"{probe['train_rows']} train rows.</p>"
        )
        parts.append(html_table(*probe_table(check)))
    items = [f"<li><strong>warning:</strong> {html.escape(w['message'])}</li>" for w in check["warnings"]]
    items += [f"<li>{html.escape(n['message'])}</li>" for n in check["notes"]]
    parts.append(f"<ul>{''.join(items)}</ul>" if items else "<p>No warning.</p>")
    return "\n".join(parts)


def write_report(source: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` and its PNG plots for every finished run and every tuning study under
    ``source``; return the HTML path."""
    from ..tuning.results import read_tuning_files

    require("matplotlib", *REPORT)  # before any work, not at the first plot
    source = Path(source)
    runs, tuning = find_runs(source, required=False), read_tuning_files(source) if source.is_dir() else []
    if not runs and not tuning:
        raise DataError(
            f"no finished run under {source}: no summary.json or tuning.json found; train, bench or tune first"
        )
    out = Path(out) if out is not None else source / "report"
    try:
        return render_report(source, runs, tuning, out)
    except OSError as error:
        raise ConfigError(
            f"cannot write the report into {out}: {error.strerror or error}; choose a writable folder with --out"
        ) from None


def render_report(source: Path, runs: Sequence[FinishedRun], tuning: Sequence[dict], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs)
    checks = data_checks(source)
    rows = [summary_row(r.summary) for methods in groups.values() for rs in methods.values() for r in rs]
    tables, comparisons = summary_tables(rows), comparison_tables(rows)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>erlmr report: {html.escape(source.name)}</title>",
        f"<style>{STYLE}</style></head><body><h1>erlmr report</h1>",
        f"<p>{len(runs)} run(s) and {len(tuning)} tuning stud{'y' if len(tuning) == 1 else 'ies'} under "
        f"<code>{html.escape(str(source))}</code>; generated {generated}. "
        "Table cells are mean ± std over seeds on the test split; see docs/metrics.md for the definitions.</p>",
    ]
    for label, methods in groups.items():
        parts.append(f"<h2>{html.escape(label)}</h2>")
        parts.append(html_table(*tables[label]))
        if label in comparisons:
            parts += ["<h3>Default against tuned (test split)</h3>", html_table(*comparisons[label])]
        if label in checks:
            parts.append(data_check_html(checks.pop(label)))
        for stem, caption, figure in dataset_plots(methods):
            parts.append(embedded_figure(out, f"{slug(label)}-{stem}.png", caption, figure))
    for label, check in checks.items():  # checks of datasets without finished runs
        parts += [f"<h2>{html.escape(label)}</h2>", data_check_html(check)]
    if tuning:
        parts += tuning_section(tuning, out)
    parts.append("</body></html>\n")
    path = out / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
