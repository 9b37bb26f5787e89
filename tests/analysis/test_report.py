"""`erlmr report`: every plot is a valid PNG, embedded in the HTML, and the page renders in a real browser."""

from __future__ import annotations

import base64
import csv
import html as html_text
import json
import os
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from erlmr.analysis.bench import run_bench, run_dir_for
from erlmr.analysis.report import write_report
from erlmr.cli import main
from erlmr.config import load_config
from erlmr.errors import DataError
from erlmr.training.run_folder import RunFolder
from erlmr.training.trainer import train

SMALL = [
    "data.dataset=synthetic",
    "data.options.train_size=160",
    "data.options.test_size=80",
    "data.options.dim=8",
    "model.euler_dim=16",
    "train.batch_size=32",
    "train.quiet=true",
    "train.device=cpu",
    "train.epochs=3",
]
LABEL = "synthetic-dim-8-test-size-80-train-size-160"
EVERY_PLOT = [
    "val-accuracy",
    "imbalance",
    "contributions",
    "accuracy-vs-step-time",
    "erlmr-phase-pareto",
    "confusion",
    "feature-map-joint",
    "feature-map-erlmr",
]
pytestmark = pytest.mark.feature_evaluation  # the runs' probes and maps at their real sizes
IMAGE = re.compile(r"<img src='data:image/png;base64,([A-Za-z0-9+/=]+)' alt='[^']*' data-file='([^']+)'>")


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory) -> Path:
    """A finished 2-method × 2-seed bench folder, trained in this process (the bench then skips every run)."""
    out = tmp_path_factory.mktemp("bench")
    for method in ("joint", "erlmr"):
        for seed in (0, 1):
            run_dir = run_dir_for(out, "synthetic", method, seed)
            train(
                load_config(None, SMALL + [f"method.name={method}", f"train.seed={seed}", f"train.run_dir={run_dir}"])
            )
    run_bench(["synthetic"], ["joint", "erlmr"], 2, out, overrides=SMALL, progress=False)  # the runs' settings
    return out


@pytest.fixture(scope="module")
def report(bench_dir) -> Path:
    return write_report(bench_dir)


def embedded_images(html: str) -> dict[str, bytes]:
    return {name: base64.b64decode(data) for data, name in IMAGE.findall(html)}


def test_report_embeds_every_plot_as_a_valid_png(report):
    html = report.read_text()
    images = embedded_images(html)
    assert sorted(images) == sorted(f"{LABEL}-{stem}.png" for stem in EVERY_PLOT)
    assert html.count("<img ") == len(EVERY_PLOT)
    for name, data in images.items():
        path = report.parent / name
        assert path.read_bytes() == data, f"{name}: the embedded copy differs from the file"
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 100
            pixels = np.asarray(image.convert("L"))
        assert pixels.std() > 5, f"{name} is blank"


def test_report_tables_list_every_method_with_seed_counts(report):
    html = report.read_text()
    assert "<h2>synthetic (dim=8, test_size=80, train_size=160)</h2>" in html
    rows = re.findall(r"<tr><td>(\w+)</td><td>(\d+)</td>", html.split("</table>")[0])  # the first table: results
    assert rows == [("joint", "2"), ("erlmr", "2")]
    assert "step time ÷ joint" in html and "1.00 ± " in html


def test_each_run_has_its_linear_probe_and_the_bench_and_report_tabulate_it(bench_dir, report):
    summaries = [
        json.loads((run_dir_for(bench_dir, "synthetic", m, s) / "summary.json").read_text())
        for m in ("joint", "erlmr")
        for s in (0, 1)
    ]
    for summary in summaries:
        for split in ("val", "test"):
            assert set(summary[split]["linear_probe"]) == {"m0", "m1"}
            assert all(0 <= a <= 1 for a in summary[split]["linear_probe"].values())
    with (bench_dir / "results.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [float(r["probe_m0"]) for r in rows] == [s["test"]["linear_probe"]["m0"] for s in summaries]
    joint = [s["test"]["linear_probe"]["m1"] for s in summaries[:2]]
    cell = f"{statistics.mean(joint):.3f} ± {statistics.stdev(joint):.3f}"
    for text in ((bench_dir / "results.md").read_text(), report.read_text()):
        assert "m0 linear probe" in text and "m1 linear probe" in text and cell in text


def test_the_feature_maps_are_the_first_seeds_with_every_class(bench_dir, report):
    maps = RunFolder(run_dir_for(bench_dir, "synthetic", "erlmr", 0)).read_feature_maps()
    assert maps["coordinates"].shape == (2, 80, 2) and np.isfinite(maps["coordinates"]).all()
    assert maps["modalities"].tolist() == ["m0", "m1"] and set(maps["labels"]) == set(range(len(maps["classes"])))
    html = report.read_text()
    assert html_text.escape("erlmr, seed 0: t-SNE of each modality's fusion-head input on 80 test samples") in html


def test_bench_writes_a_data_check_and_the_report_shows_it(bench_dir, report):
    check = json.loads((bench_dir / "synthetic" / "data_check.json").read_text())
    assert check["dataset"] == "synthetic" and set(check["probe"]["accuracy"]["val"]) == {"m0", "m1", "fused"}
    html = report.read_text()
    section = html.split("<h3>Data check</h3>")[1]
    assert "Training normalises inputs: <code>none</code>" in section
    assert f"<td>val</td><td>{check['probe']['accuracy']['val']['m0']:.3f}</td>" in section


def test_report_of_one_run_folder_has_no_erlmr_curves(bench_dir, tmp_path, capsys):
    assert main(["report", str(run_dir_for(bench_dir, "synthetic", "joint", 0)), "--out", str(tmp_path)]) == 0
    assert str(tmp_path / "report.html") in capsys.readouterr().out
    names = sorted(embedded_images((tmp_path / "report.html").read_text()))
    assert names == sorted(f"{LABEL}-{stem}.png" for stem in EVERY_PLOT if "erlmr" not in stem)


def test_report_of_a_folder_without_runs_says_so(tmp_path, capsys):
    with pytest.raises(DataError, match="no finished run"):
        write_report(tmp_path)
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def one_run_copy(bench_dir: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(run_dir_for(bench_dir, "synthetic", "joint", 0), run_dir)
    return run_dir


def test_report_into_an_unwritable_folder_is_one_line(bench_dir, tmp_path, capsys):
    run_dir = one_run_copy(bench_dir, tmp_path)
    (tmp_path / "a-file").write_text("")
    assert main(["report", str(run_dir), "--out", str(tmp_path / "a-file" / "report")]) == 2
    assert capsys.readouterr().err == (
        f"erlmr: error: cannot write the report into {tmp_path / 'a-file' / 'report'}: "
        "Not a directory; choose a writable folder with --out\n"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_report_into_a_read_only_folder_is_one_line(bench_dir, tmp_path, capsys):
    run_dir = one_run_copy(bench_dir, tmp_path)
    (tmp_path / "ro").mkdir(mode=0o500)
    assert main(["report", str(run_dir), "--out", str(tmp_path / "ro")]) == 2
    assert "cannot write the report into" in capsys.readouterr().err


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda run: (run / "summary.json").write_text('{"method": "joint", "te'),
            r"summary\.json is damaged \(JSONDecodeError: .*\); "
            r"delete it and run erlmr train --resume .*run to write it again",
        ),
        (
            lambda run: (run / "summary.json").write_text('{"method": "joint"}'),
            r"summary\.json is not a summary erlmr wrote \(it lacks \['dataset', 'seed', .*'test\.accuracy'",
        ),
        (
            lambda run: (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text().replace("}", "", 1)),
            r"metrics\.jsonl, line 1, is not a JSON object \(Expecting .*\): the epoch records of the run are damaged",
        ),
        (
            lambda run: (run / "metrics.jsonl").write_text("[1, 2]\n" + (run / "metrics.jsonl").read_text()),
            r"metrics\.jsonl, line 1, is not a JSON object \(a JSON list\)",
        ),
    ],
)
def test_report_of_a_damaged_run_names_the_file(bench_dir, tmp_path, capsys, damage, message):
    run_dir = one_run_copy(bench_dir, tmp_path)
    damage(run_dir)
    assert main(["report", str(run_dir)]) == 2
    error = capsys.readouterr().err
    assert re.fullmatch(rf"erlmr: error: {run_dir}/{message}.*\n", error), error


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HEADLESS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Counts, once the page has loaded, the images the browser could not decode.
IMAGE_CHECK = (
    "<script>window.addEventListener('load', () => { const images = [...document.images];"
    " document.body.dataset.images = images.length;"
    " document.body.dataset.broken = images.filter(i => !i.complete || i.naturalWidth === 0).length; });</script>"
)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    return subprocess.run(
        [CHROMIUM, *HEADLESS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.skipif(CHROMIUM is None, reason="headless check needs Debian's chromium: apt-get install -y chromium")
def test_report_renders_in_headless_chromium_without_missing_images(report, tmp_path):
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", IMAGE_CHECK + "</body>"))
    dom = chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body, f"chromium printed no page: {dom.stderr[-2000:]}"
    assert f'data-images="{len(EVERY_PLOT)}"' in body.group(0)
    assert 'data-broken="0"' in body.group(0)

    screenshot = tmp_path / "report.png"
    chromium(tmp_path, "--window-size=1300,2400", f"--screenshot={screenshot}", report.as_uri())
    with Image.open(screenshot) as image:
        assert image.size == (1300, 2400)
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 20, "the screenshot is blank"
