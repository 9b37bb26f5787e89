"""A bench killed (kill -9) or stopped (SIGTERM) leaves no worker running, and the same bench run again
continues its partial runs and ends with the table of an uninterrupted bench."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import erlmr
from erlmr.analysis.bench import run_dir_for
from erlmr.cli import main
from erlmr.training.checkpoint import load_checkpoint
from erlmr.training.lock import LOCK_NAME

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the bench's processes in /proc")

METHODS = ("joint", "unimodal[modality=m0]")
#: cost columns: measured, so no two benches share them
COST = ("parameters", "flops_per_sample", "step_time_s", "peak_memory_mb")


def bench_args(out: Path) -> list[str]:
    return [
        "bench",
        "--datasets",
        "synthetic",
        "--methods",
        ",".join(METHODS),
        "--seeds",
        "1",
        "--out",
        str(out),
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--quiet",
        "--set",
        "data.options.train_size=240",
        "--set",
        "data.options.test_size=60",
    ]


def start_bench(out: Path) -> subprocess.Popen:
    """The bench as its own session, so that every process it starts can be found by session id."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(erlmr.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "erlmr", *bench_args(out)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def running_in(session: int) -> list[int]:
    """PIDs of the processes of ``session`` that are still running (a zombie has ended; its parent has yet to
    reap it)."""
    pids = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        state, _, _, session_id = stat[stat.rindex(")") + 2 :].split()[:4]
        if int(session_id) == session and state != "Z":
            pids.append(int(name))
    return pids


def wait_until(condition, timeout: float, bench: subprocess.Popen | None = None) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout`` or if ``bench`` exited first."""
    started = time.monotonic()
    while not condition():
        assert bench is None or bench.poll() is None, bench.stderr.read().decode()
        assert time.monotonic() - started < timeout, f"still false after {timeout} s"
        time.sleep(0.005)
    return time.monotonic() - started


def comparable(out: Path) -> tuple[list[dict], list[str]]:
    """results.csv without the cost columns, and results.md's table rows without the step-time column."""
    with (out / "results.csv").open() as file:
        rows = [{k: v for k, v in row.items() if k not in COST} for row in csv.DictReader(file)]
    cells = [line.split("|") for line in (out / "results.md").read_text().splitlines() if line.startswith("|")]
    timed = [i for i, name in enumerate(cells[0]) if "step time" in name]  # the header names the cost column
    return rows, ["|".join(c for i, c in enumerate(row) if i not in timed) for row in cells]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    assert main(bench_args(out)) == 0
    return out


def frozen_worker(run_dir: Path, bench: subprocess.Popen | None = None) -> int:
    """Once ``run_dir`` has its first checkpoint, freeze (SIGSTOP) the worker training it, so that however fast
    the machine, the run cannot end before the test has done what it wants mid-run; its PID."""
    wait_until(lambda: (run_dir / "last.pt").exists(), 300, bench)
    worker = int((run_dir / LOCK_NAME).read_text())
    os.kill(worker, signal.SIGSTOP)
    return worker


def test_killed_and_stopped_bench_leaves_no_worker_and_resumes_to_the_uninterrupted_table(
    tmp_path, uninterrupted, capsys
):
    out = tmp_path / "bench"
    joint, unimodal = (run_dir_for(out, "synthetic", method, 0) for method in METHODS)

    bench, worker = start_bench(out), None  # 1. kill -9 while it trains joint
    try:
        worker = frozen_worker(joint, bench)
        assert main(bench_args(out)) == 2  # a second bench into the same folder
        assert f"bench folder {out} is being written by another process (PID {bench.pid})" in capsys.readouterr().err
        bench.send_signal(signal.SIGKILL)
        bench.wait()
        os.kill(worker, signal.SIGCONT)
        assert wait_until(lambda: worker not in running_in(bench.pid), 1.0) < 1.0
        wait_until(lambda: not running_in(bench.pid), 30)  # multiprocessing's helpers exit once their clients have
    finally:
        bench.kill()
        bench.stderr.close()
        if worker in running_in(bench.pid):
            os.kill(worker, signal.SIGCONT)  # thawed, it sees that the bench is gone and stops
    assert not (joint / "summary.json").exists()

    def stop_once_unimodal_trains() -> None:  # 2. SIGTERM to the bench (this process) while it trains unimodal
        try:
            workers.append(frozen_worker(unimodal))
        except BaseException as error:  # reported below; the SIGTERM still ends the bench
            errors.append(error)
        os.kill(os.getpid(), signal.SIGTERM)  # forwarded to the frozen worker, which gets it once it thaws
        time.sleep(0.2)
        for worker in workers:
            os.kill(worker, signal.SIGCONT)

    workers, errors, handler = [], [], signal.getsignal(signal.SIGTERM)
    threading.Thread(target=stop_once_unimodal_trains, daemon=True).start()
    code = main(bench_args(out))
    assert not errors and code == 128 + signal.SIGTERM, errors
    assert "erlmr: bench stopped by SIGTERM; the runs in progress saved their state" in capsys.readouterr().err
    assert (joint / "summary.json").exists() and not (unimodal / "summary.json").exists()
    # its state: mid-epoch when the signal came during an epoch, else that of the epoch it had just ended
    assert load_checkpoint(unimodal / "last.pt")["resume"]["epoch"] >= 1
    assert not Path(f"/proc/{workers[0]}").exists() and signal.getsignal(signal.SIGTERM) is handler

    assert main(bench_args(out)) == 0  # 3. the same bench again
    assert "Failed runs" not in capsys.readouterr().out
    assert comparable(out) == comparable(uninterrupted)


def test_a_partial_run_of_other_settings_is_not_continued(tmp_path, at_step, monkeypatch, capsys):
    out = tmp_path / "bench"
    at_step(3, lambda model: os.kill(os.getpid(), signal.SIGTERM))
    run_dir = run_dir_for(out, "synthetic", "joint", 0)  # a partial run, as an interrupted bench leaves it
    assert (
        main(["train", "--dataset", "synthetic", "--method", "joint", *bench_args(out)[9:], "--run-dir", str(run_dir)])
        == 143
    )
    monkeypatch.undo()
    assert main([*bench_args(out), "--epochs", "4", "--methods", "joint"]) == 1
    assert (
        "holds an unfinished run with other settings than this bench's: train.epochs: 3 in the folder, 4 now"
        in capsys.readouterr().out
    )


def test_a_finished_run_of_other_settings_is_refused_before_any_run(tmp_path, capsys):
    """A finished run (left by a bench with other flags, or copied in from another bench) must not fill a
    cell of this bench silently: the bench stops before it trains anything."""
    out = tmp_path / "bench"
    assert main([*bench_args(out), "--methods", "joint"]) == 0
    summary = (run_dir_for(out, "synthetic", "joint", 0) / "summary.json").read_text()
    capsys.readouterr()
    assert main([*bench_args(out), "--epochs", "4"]) == 2
    err = capsys.readouterr().err
    assert "holds a finished run with other settings than this bench's: train.epochs: 3 in the folder, 4 now" in err
    assert not run_dir_for(out, "synthetic", "unimodal[modality=m0]", 0).exists()  # nothing trained
    assert (run_dir_for(out, "synthetic", "joint", 0) / "summary.json").read_text() == summary
    # What a run records beside its numbers is not a setting: the same bench without the probes reuses it.
    assert main([*bench_args(out), "--methods", "joint", "--set", "train.linear_probe=false"]) == 0
    # The same settings on other data (a run copied from a machine that built the dataset differently).
    path = run_dir_for(out, "synthetic", "joint", 0) / "summary.json"
    path.write_text(summary.replace(json.loads(summary)["data_fingerprint"], "0123456789abcdef"))
    capsys.readouterr()
    assert main([*bench_args(out), "--methods", "joint"]) == 2
    assert "trained on other data than this bench loads (data fingerprint 0123456789abcdef in the folder" in (
        capsys.readouterr().err
    )
