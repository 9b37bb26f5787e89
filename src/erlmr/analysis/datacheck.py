"""``erlmr data check``: what a dataset holds, what will hurt training, and how informative each modality is.

One streaming pass per split (a seeded sample of at most :data:`STAT_ROWS` rows of a larger one) gives,
per modality, the value range and the spread of per-feature (per-channel) scales on train, constant
features and non-finite values; the class counts come from every label. A compact copy of some rows
(:data:`PROBE_ROWS` per split, trailing axes pooled to :data:`COMPACT_VALUES` values), standardised
with the train statistics, feeds a logistic-regression probe per modality and fused
(:mod:`erlmr.analysis.probe`), scored on validation (and test, for comparison with trained runs), and
the search for samples of val or test that copy, or nearly copy, a training sample. The report is a
plain dict (``--json``), printed as tables by :func:`format_check`; ``warnings`` lists what will hurt
training, ``notes`` what to expect.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..data import DatasetSplits, Split, load_dataset
from ..data.arrays import read_array_folder
from ..data.checks import check_splits
from ..errors import ConfigError, ErlmrError, MissingDependencyError
from ..nn.normalize import BATCH_VALUES, ChannelMoments, by_channel, column_names, statistics_shape
from ..training.checkpoint import write_json
from .probe import pool_trailing, pooled, run_probe

SPLITS = ("train", "val", "test")
STAT_ROWS = 20_000
PROBE_ROWS = {"train": 4000, "val": 2000, "test": 2000}
COMPACT_VALUES = 4096
STORE_VALUES = 2**24  # values per modality and split kept for the probe
SPREAD_WARNING = 1000.0  # feature scales three orders of magnitude apart
NEAR_FRACTION = 0.05  # "near-identical": closer than this share of the typical train nearest-neighbour distance
PROJECTION_DIM = 64
CHANCE_MARGIN = 0.02
GAP_NOTE = 0.15


@dataclass
class SplitScan:
    """What one pass over a split gathered."""

    rows: int
    scanned: int
    moments: dict[str, ChannelMoments]
    compact: dict[str, torch.Tensor]
    labels: np.ndarray  # of the compact rows
    class_counts: np.ndarray
    digests: list[str]  # of the compact rows, for exact copies


def seeded_rows(total: int, keep: int, seed: int) -> np.ndarray:
    return (
        np.arange(total) if keep >= total else np.sort(np.random.default_rng(seed).choice(total, keep, replace=False))
    )


def compact_shape(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(pool_trailing(torch.zeros(1, *shape), COMPACT_VALUES).shape[1:])


def scan_split(name: str, split: Split, splits: DatasetSplits, seed: int) -> SplitScan:
    """Moments of every modality over (a sample of) the split, and a compact copy of the probe rows."""
    shapes = splits.input_shapes()
    rows = seeded_rows(len(split), STAT_ROWS, seed)
    probe_keep = min([PROBE_ROWS[name], *(STORE_VALUES // int(np.prod(compact_shape(s))) for s in shapes.values())])
    probe = np.isin(rows, rows[seeded_rows(len(rows), probe_keep, seed + 1)])
    moments = {m: ChannelMoments(statistics_shape(shapes[m])[0]) for m in splits.modalities}
    parts: dict[str, list[torch.Tensor]] = {m: [] for m in splits.modalities}
    batch = max(1, BATCH_VALUES // max(int(np.prod(s)) for s in shapes.values()))
    for start in range(0, len(rows), batch):
        inputs, _ = split.__getitems__(rows[start : start + batch].tolist())
        keep = torch.from_numpy(probe[start : start + batch])
        for m, x in inputs.items():
            moments[m].update(by_channel(x))
            parts[m].append(pool_trailing(x[keep], COMPACT_VALUES))
    compact = {m: torch.cat(p) for m, p in parts.items()}
    labels = split.labels.numpy()
    return SplitScan(
        len(split),
        len(rows),
        moments,
        compact,
        labels[rows[probe]],
        np.bincount(labels, minlength=splits.num_classes),
        row_digests(compact, splits.modalities),
    )


def row_digests(compact: Mapping[str, torch.Tensor], modalities: Sequence[str]) -> list[str]:
    rows = len(compact[modalities[0]])
    flat = [compact[m].reshape(rows, -1).numpy() for m in modalities]
    return [hashlib.sha1(b"".join(x[i].tobytes() for x in flat)).hexdigest() for i in range(rows)]


def standardized(scans: Mapping[str, SplitScan], modalities: Sequence[str]) -> dict[str, dict[str, torch.Tensor]]:
    """The compact rows of every split with the train split's per-channel shift and scale, non-finite → 0."""
    result: dict[str, dict[str, torch.Tensor]] = {s: {} for s in scans}
    for m in modalities:
        train = scans["train"].moments[m]
        shape = statistics_shape(scans["train"].compact[m].shape[1:])
        shift = torch.from_numpy(np.where(np.isfinite(train.mean), train.mean, 0.0)).float().reshape(shape)
        scale = torch.from_numpy(np.where(train.constant | ~(train.std > 0), 1.0, train.std)).float().reshape(shape)
        for s, scan in scans.items():
            result[s][m] = torch.nan_to_num((scan.compact[m] - shift) / scale, nan=0.0, posinf=0.0, neginf=0.0)
    return result


def modality_report(m: str, shape: tuple[int, ...], dtype: str, scans: Mapping[str, SplitScan]) -> dict[str, Any]:
    train = scans["train"].moments[m]
    varying = ~train.constant
    std = train.std[varying]
    finite = np.isfinite(train.minimum)
    nonfinite = {s: int(scan.moments[m].nonfinite.sum()) for s, scan in scans.items()}
    bad = np.flatnonzero(sum(scan.moments[m].nonfinite for scan in scans.values()))
    return {
        "shape": list(shape),
        "dtype": dtype,
        "statistics_over": "feature" if len(shape) == 1 else "channel",
        "columns": int(len(varying)),
        "min": float(train.minimum[finite].min()) if finite.any() else None,
        "max": float(train.maximum[finite].max()) if finite.any() else None,
        "scale_min": float(std.min()) if len(std) else 0.0,
        "scale_max": float(std.max()) if len(std) else 0.0,
        "scale_spread": float(std.max() / std.min()) if len(std) else 1.0,
        "typical_scale": float(np.median(std)) if len(std) else 0.0,
        "constant_columns": np.flatnonzero(train.constant).tolist(),
        "nonfinite": nonfinite,
        "nonfinite_columns": bad.tolist(),
    }


def duplicates(
    features: Mapping[str, np.ndarray], scans: Mapping[str, SplitScan], seed: int
) -> dict[str, dict[str, int]]:
    """Per scored split, how many probe rows copy a training row exactly, and how many lie closer to one
    than :data:`NEAR_FRACTION` of the typical nearest-neighbour distance between training rows (on a seeded
    random projection of the standardised, pooled, fused rows)."""
    train = torch.from_numpy(features["train"]).float()
    projection = torch.randn(train.shape[1], PROJECTION_DIM, generator=torch.Generator().manual_seed(seed))
    train = train @ projection
    reference = train[: min(len(train), 1000)]
    within = torch.cdist(reference, train)
    within[torch.arange(len(reference)), torch.arange(len(reference))] = float("inf")
    typical = float(within.min(1).values.median()) if len(train) > 1 else 0.0
    seen = set(scans["train"].digests)
    found = {}
    for s in ("val", "test"):
        rows = torch.from_numpy(features[s]).float() @ projection
        nearest = torch.cdist(rows, train).min(1).values if len(rows) and len(train) else torch.zeros(0)
        found[s] = {
            "rows": len(rows),
            "exact": sum(d in seen for d in scans[s].digests),
            "near": int((nearest <= NEAR_FRACTION * typical).sum()),
        }
    return found


def probe_features(
    inputs: Mapping[str, Mapping[str, torch.Tensor]], modalities: Sequence[str]
) -> dict[str, np.ndarray]:
    """Per split, the fused rows for the duplicate search: each modality pooled, weighted equally."""
    fused = {}
    for s, data in inputs.items():
        parts = [pooled(data[m], 512) for m in modalities]
        fused[s] = torch.cat([p / max(p.shape[1], 1) ** 0.5 for p in parts], 1).numpy()
    return fused


def shared_groups(groups: Mapping[str, Sequence | np.ndarray]) -> dict[str, dict[str, Any]]:
    """For each pair of splits with group ids, the groups in both."""
    shared = {}
    names = [s for s in SPLITS if s in groups]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = sorted(set(np.asarray(groups[a]).tolist()) & set(np.asarray(groups[b]).tolist()))
            shared[f"{a}&{b}"] = {"count": len(both), "examples": [str(g) for g in both[:5]]}
    return shared


def check_data(splits: DatasetSplits, normalize: str = "auto", seed: int = 0, probe: bool = True) -> dict[str, Any]:
    """The data-check report of loaded ``splits`` (see the module docstring); ``normalize`` is the
    ``data.normalize`` setting training would use."""
    started = time.perf_counter()
    scans = {s: scan_split(s, getattr(splits, s), splits, seed) for s in SPLITS}
    shapes = splits.input_shapes()
    report: dict[str, Any] = {
        "dataset": splits.name,
        "normalization": splits.input_normalization(normalize),
        "normalize_setting": normalize,
        "classes": list(splits.classes),
        "splits": {
            s: {"samples": scan.rows, "scanned": scan.scanned, "class_counts": scan.class_counts.tolist()}
            for s, scan in scans.items()
        },
        "modalities": {
            m: modality_report(m, shapes[m], str(splits.train.inputs[m].dtype).removeprefix("torch."), scans)
            for m in splits.modalities
        },
        "groups": shared_groups(splits.groups),
    }
    inputs = standardized(scans, splits.modalities)
    labels = {s: scan.labels for s, scan in scans.items()}
    report["duplicates"] = duplicates(probe_features(inputs, splits.modalities), scans, seed)
    report["probe"] = probe_report(inputs, labels, splits.modalities, seed) if probe else {"skipped": "not asked for"}
    report["chance"] = {s: float(np.bincount(labels[s]).max() / max(len(labels[s]), 1)) for s in ("val", "test")}
    report["warnings"], report["notes"] = findings(report, splits)
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report


def probe_report(inputs, labels, modalities: Sequence[str], seed: int) -> dict[str, Any]:
    try:
        result = run_probe(inputs, labels, modalities, seed)
    except MissingDependencyError as error:  # scikit-learn missing: the rest of the check still stands
        return {"skipped": str(error)}
    return {
        "accuracy": result.accuracy,
        "representation": result.representation,
        "features": result.features,
        "train_rows": result.train_rows,
    }


def findings(report: Mapping[str, Any], splits: DatasetSplits) -> tuple[list[dict], list[dict]]:
    """(warnings, notes), each ``{"code", "message"}``."""
    warnings = [*modality_warnings(report), *class_warnings(report), *leak_warnings(report, splits)]
    notes, probe_warnings = probe_findings(report)
    return warnings + probe_warnings, notes


def modality_warnings(report: Mapping[str, Any]) -> list[dict]:
    found = []
    raw = report["normalization"] == "none"
    for m, info in report["modalities"].items():
        shape = tuple(info["shape"])
        total = sum(info["nonfinite"].values())
        if total:
            where = ", ".join(f"{s} {n}" for s, n in info["nonfinite"].items() if n)
            found.append(
                warning(
                    "nonfinite",
                    f"modality {m!r} holds {total} NaN/Inf value(s) ({where}) in "
                    f"{column_names(shape, info['nonfinite_columns'])}; training refuses them: clean or "
                    "drop those samples",
                )
            )
        constant = info["constant_columns"]
        if len(constant) == info["columns"]:
            found.append(
                warning(
                    "constant_modality",
                    f"modality {m!r} is constant on the train split: it carries "
                    "no information; check how it was exported",
                )
            )
        elif constant:
            found.append(
                warning(
                    "constant_features",
                    f"modality {m!r} is constant on the train split in "
                    f"{column_names(shape, constant)}: no information there",
                )
            )
        if raw and info["scale_spread"] >= SPREAD_WARNING:
            found.append(
                warning(
                    "scale_spread",
                    f"modality {m!r}: {info['statistics_over']} scales spread over "
                    f"{orders(info['scale_spread'])} (std {info['scale_min']:.3g} … {info['scale_max']:.3g}) "
                    "and data.normalize is none: the largest ones will dominate training. Set "
                    "data.normalize=standard (or robust)",
                )
            )
    scales = {m: info["typical_scale"] for m, info in report["modalities"].items() if info["typical_scale"] > 0}
    if raw and len(scales) > 1 and max(scales.values()) / min(scales.values()) >= SPREAD_WARNING:
        spread = max(scales.values()) / min(scales.values())
        listing = ", ".join(f"{m} {v:.3g}" for m, v in scales.items())
        found.append(
            warning(
                "modality_scale_spread",
                f"the modalities' typical scales spread over {orders(spread)} "
                f"({listing}) and data.normalize is none; set data.normalize=standard",
            )
        )
    return found


def class_warnings(report: Mapping[str, Any]) -> list[dict]:
    classes = report["classes"]
    counts = {s: np.asarray(info["class_counts"]) for s, info in report["splits"].items()}
    found = []
    nowhere = np.flatnonzero(sum(counts.values()) == 0)
    implied = classes == [str(c) for c in range(len(classes))]
    if len(nowhere) and implied:
        found.append(
            warning(
                "class_without_samples",
                f"the labels imply {len(classes)} classes (0..{len(classes) - 1}) "
                f"but {class_list(classes, nowhere)} no sample in any split: labels must be 0..K-1 "
                "(remap them), or name the classes in meta.json",
            )
        )
    elif len(nowhere):
        found.append(warning("class_without_samples", f"{class_list(classes, nowhere)} no sample in any split"))
    for s, count in counts.items():
        missing = np.setdiff1d(np.flatnonzero(count == 0), nowhere)
        if len(missing):
            effect = "the model cannot learn them" if s == "train" else "their accuracy is not measured there"
            found.append(
                warning("class_missing", f"{class_list(classes, missing)} no sample in the {s} split: {effect}")
            )
    return found


def leak_warnings(report: Mapping[str, Any], splits: DatasetSplits) -> list[dict]:
    found = []
    for pair, info in report["groups"].items():
        if info["count"]:
            a, b = pair.split("&")
            found.append(
                warning(
                    "group_overlap",
                    f"{info['count']} group(s) are in both the {a} and the {b} split "
                    f"(e.g. {', '.join(info['examples'])}): {b} accuracy will overstate accuracy on new groups",
                )
            )
    hint = "" if splits.groups else "; if samples are windows of longer recordings, give each its recording as `group`"
    for s, info in report["duplicates"].items():
        if info["exact"]:
            found.append(
                warning(
                    "duplicates",
                    f"{info['exact']} of {info['rows']} checked {s} samples are exact copies of training samples{hint}",
                )
            )
        elif info["near"]:
            found.append(
                warning(
                    "near_duplicates",
                    f"{info['near']} of {info['rows']} checked {s} samples are "
                    f"near-identical to a training sample{hint}",
                )
            )
    return found


def probe_findings(report: Mapping[str, Any]) -> tuple[list[dict], list[dict]]:
    """Notes on the expected imbalance and warnings for a modality the probe finds at chance."""
    probe = report["probe"]
    if "skipped" in probe:
        return [], [warning("probe_skipped", f"probe skipped: {probe['skipped']}")]
    split = "val" if "val" in probe["accuracy"] else "test"
    scores = {m: a for m, a in probe["accuracy"][split].items() if m != "fused"}
    chance = report["chance"][split]
    found = [
        warning(
            "probe_chance",
            f"modality {m!r} scores {a:.3f} in the probe, at chance ({chance:.3f}): it may "
            "carry no usable information (or only what a linear model cannot read)",
        )
        for m, a in scores.items()
        if a <= chance + CHANCE_MARGIN
    ]
    best = max(scores, key=scores.__getitem__)
    weak = [m for m, a in scores.items() if scores[best] - a >= GAP_NOTE]
    notes = (
        [
            warning(
                "imbalance",
                f"the probe reads {best!r} {scores[best]:.3f} against "
                + ", ".join(f"{m!r} {scores[m]:.3f}" for m in weak)
                + f" on {split}: expect joint training to under-use the weaker modality",
            )
        ]
        if weak
        else []
    )
    return notes, found


def warning(code: str, message: str) -> dict:
    return {"code": code, "message": message}


def orders(ratio: float) -> str:
    return f"{np.log10(ratio):.1f} orders of magnitude"


def class_list(classes: Sequence[str], indices: Sequence[int] | np.ndarray) -> str:
    """``"class 'cat' has"`` / ``"classes 'cat', 'dog' have"``, to be followed by what they have."""
    shown = ", ".join(repr(classes[i]) for i in indices[:6]) + (
        f" and {len(indices) - 6} more" if len(indices) > 6 else ""
    )
    return f"classes {shown} have" if len(indices) > 1 else f"class {shown} has"


def load_for_check(
    dataset: str, root: str | None, options: Mapping[str, Any], seed: int, val_fraction: float
) -> DatasetSplits:
    """The splits as training would load them, except that an array folder's NaN and Inf are let through
    to be counted (training refuses them)."""
    if dataset != "arrays":
        return load_dataset(dataset, root, seed, val_fraction, options)
    if options:
        raise ConfigError(f"unknown option(s) {sorted(options)} for dataset 'arrays'; valid options: none")
    splits = read_array_folder(root, seed, val_fraction, finite=False)
    check_splits("arrays", splits, finite=False)
    return splits


def check_dataset(
    dataset: str,
    root: str | None = None,
    options: Mapping[str, Any] | None = None,
    normalize: str = "auto",
    seed: int = 0,
    val_fraction: float = 0.1,
    probe: bool = True,
) -> dict[str, Any]:
    """Load a registered dataset (or the array folder ``root`` with ``dataset="arrays"``) and check it."""
    from ..config import NORMALIZE

    if normalize not in NORMALIZE:
        raise ConfigError(f"unknown data.normalize {normalize!r}; valid: {', '.join(NORMALIZE)}")
    options = dict(options or {})
    started = time.perf_counter()
    splits = load_for_check(dataset, root, options, seed, val_fraction)
    loaded = time.perf_counter() - started
    report = check_data(splits, normalize, seed, probe)
    report.update(
        dataset=dataset,
        source=splits.name,
        root=root,
        data_options=options,
        seconds=round(report["seconds"] + loaded, 2),
    )
    return report


def text_table(headings: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [headings, *rows]) for i in range(len(headings))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [headings, *rows]]


MODALITY_HEADINGS = [
    "modality",
    "shape",
    "dtype",
    "range (train)",
    "std per feature/channel",
    "spread",
    "constant",
    "non-finite",
]
SPLIT_HEADINGS = ["split", "samples", "per class"]


def split_rows(report: Mapping[str, Any]) -> list[list[str]]:
    return [[s, str(info["samples"]), class_cells(info["class_counts"])] for s, info in report["splits"].items()]


def probe_table(report: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Headings and rows of the probe's accuracies: one row per scored split, with chance."""
    accuracy = report["probe"]["accuracy"]
    columns = list(next(iter(accuracy.values())))
    rows = [[s, *(f"{scores[c]:.3f}" for c in columns), f"{report['chance'][s]:.3f}"] for s, scores in accuracy.items()]
    return ["split", *columns, "chance"], rows


def modality_rows(report: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for m, info in report["modalities"].items():
        span = "n/a" if info["min"] is None else f"{info['min']:.3g} … {info['max']:.3g}"
        rows.append(
            [
                m,
                str(tuple(info["shape"])),
                info["dtype"],
                span,
                f"{info['scale_min']:.3g} … {info['scale_max']:.3g}",
                f"{info['scale_spread']:.3g}×",
                f"{len(info['constant_columns'])}/{info['columns']}",
                str(sum(info["nonfinite"].values())),
            ]
        )
    return rows


def class_cells(counts: Sequence[int]) -> str:
    if len(counts) <= 12:
        return " ".join(str(c) for c in counts)
    return f"{min(counts)} … {max(counts)} per class, {sum(c == 0 for c in counts)} without samples"


def probe_lines(report: Mapping[str, Any]) -> list[str]:
    probe = report["probe"]
    if "skipped" in probe:
        return [f"probe skipped: {probe['skipped']}"]
    lines = [f"probe: logistic regression on standardised features, fit on {probe['train_rows']} train rows"]
    lines += text_table(*probe_table(report))
    lines.append("features: " + "; ".join(f"{m}: {r}" for m, r in probe["representation"].items()))
    return lines


def format_check(report: Mapping[str, Any]) -> str:
    """The report as terminal tables, warnings last."""
    source = report["root"] or report["source"]
    lines = [
        f"data check of {report['dataset']} ({source}): {len(report['classes'])} classes, {report['seconds']:.1f} s",
        f"training normalises inputs: {report['normalization']} (data.normalize={report['normalize_setting']})",
        "",
    ]
    lines += text_table(MODALITY_HEADINGS, modality_rows(report))
    lines.append("")
    lines += text_table(SPLIT_HEADINGS, split_rows(report)) + [""]
    lines += probe_lines(report) + [""]
    copies = "; ".join(
        f"{s} {d['exact']} exact, {d['near']} near-identical of {d['rows']}" for s, d in report["duplicates"].items()
    )
    lines.append(f"copies of training samples: {copies}")
    if report["groups"]:
        lines.append(
            "groups shared: " + "; ".join(f"{pair} {info['count']}" for pair, info in report["groups"].items())
        )
    lines += ["", f"warnings ({len(report['warnings'])}):"] + [f"  ! {w['message']}" for w in report["warnings"]]
    if report["notes"]:
        lines += ["notes:"] + [f"  - {n['message']}" for n in report["notes"]]
    return "\n".join(lines)


def write_data_check(folder: Path, config) -> dict[str, Any] | None:
    """Check the data of ``config`` (a :class:`~erlmr.config.Config`) once and keep the report as
    ``folder/data_check.json`` for ``erlmr report``; None when the data does not load (training will
    then say why)."""
    path = Path(folder) / "data_check.json"
    if path.exists():
        return json.loads(path.read_text())
    data = config.data
    try:
        report = check_dataset(
            data.dataset, data.root, data.options, data.normalize, config.train.seed, data.val_fraction
        )
    except ErlmrError:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, report)
    return report
