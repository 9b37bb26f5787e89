"""One writer per folder: a second process is refused with one line naming the folder and the holder's PID,
and the lock dies with its holder, so that a killed run can be resumed at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import erlmr
from erlmr.errors import CheckpointError
from erlmr.training import lock
from erlmr.training.lock import LOCK_NAME, FolderLock, refuse_if_being_written

pytestmark = pytest.mark.skipif(lock.fcntl is None, reason="folder locks use fcntl.flock (POSIX)")


def python_env() -> dict:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(erlmr.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }


def test_a_second_lock_is_refused_until_the_first_is_released(tmp_path):
    first = FolderLock(tmp_path, "run folder", "choose another train.run_dir").acquire()
    with pytest.raises(
        CheckpointError,
        match=rf"run folder {tmp_path} is being written by another process "
        rf"\(PID {os.getpid()}\); choose another train.run_dir",
    ):
        FolderLock(tmp_path, "run folder", "choose another train.run_dir").acquire()
    with pytest.raises(CheckpointError, match=rf"PID {os.getpid()}\); evaluate it later"):
        refuse_if_being_written(tmp_path, "run folder", "evaluate it later")
    first.release()
    assert not (tmp_path / LOCK_NAME).exists()  # no file left behind
    refuse_if_being_written(tmp_path, "run folder", "evaluate it later")
    with FolderLock(tmp_path, "run folder", "wait"):
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"


def test_a_lock_file_left_by_a_dead_process_does_not_lock(tmp_path):
    (tmp_path / LOCK_NAME).write_text("999999\n")  # what kill -9 leaves: the file, but no lock on it
    refuse_if_being_written(tmp_path, "run folder", "wait")
    with FolderLock(tmp_path, "run folder", "wait"):
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"


def test_a_second_training_into_a_run_folder_and_its_evaluation_are_refused_while_it_trains(tmp_path, capsys):
    """Two real `erlmr train` processes into one --run-dir: the second is refused before writing anything, and
    `erlmr eval` refuses the folder while it is written; once the first is killed, the folder is free."""
    from erlmr.cli import main

    run_dir = tmp_path / "run"
    args = [
        "train",
        "--dataset",
        "synthetic",
        "--method",
        "joint",
        "--epochs",
        "1000",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--quiet",
        "--set",
        "data.options.train_size=200",
        "--set",
        "data.options.test_size=50",
    ]
    first = subprocess.Popen(
        [sys.executable, "-m", "erlmr", *args, "--run-dir", str(run_dir)],
        env=python_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        while not (run_dir / "last.pt").exists():
            assert first.poll() is None, first.stderr.read().decode()
            time.sleep(0.05)
        config = (run_dir / "config.yaml").read_text()
        assert main([*args, "--seed", "1", "--run-dir", str(run_dir)]) == 2
        assert f"run folder {run_dir} is being written by another process (PID {first.pid})" in capsys.readouterr().err
        assert main(["eval", str(run_dir), "--device", "cpu"]) == 2
        assert (
            f"{run_dir} is being written by another process (PID {first.pid}); evaluate it once"
            in capsys.readouterr().err
        )
        assert (run_dir / "config.yaml").read_text() == config and first.poll() is None
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        first.kill()
        first.stderr.close()
    refuse_if_being_written(run_dir, "run folder", "wait")  # the kernel dropped the dead holder's lock
    with FolderLock(run_dir, "run folder", "wait"):
        pass


def test_benches_of_one_shard_exclude_each_other_but_not_benches_of_other_shards(tmp_path):
    from erlmr.analysis.bench import run_bench, shard_lock_name

    with FolderLock(tmp_path, "bench folder", "wait", shard_lock_name((1, 2))):  # as a bench of shard 1/2 holds it
        with pytest.raises(
            CheckpointError,
            match=rf"bench folder {tmp_path} is being written by another process "
            rf"\(PID {os.getpid()}\); wait for that bench \(shard 1/2\) to finish",
        ):
            run_bench(["synthetic"], ["no_such_method"], 2, tmp_path, shard=(1, 2), progress=False)
        result = run_bench(["synthetic"], ["no_such_method"], 2, tmp_path, shard=(2, 2), progress=False)
    assert list(result.failures) == [("synthetic", "no_such_method", 1)]  # shard 2/2 ran its share
