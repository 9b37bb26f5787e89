"""Resume: a run stopped anywhere (SIGKILL, SIGINT, SIGTERM) and resumed ends bit-for-bit like an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import erlmr
from erlmr.cli import main
from erlmr.errors import CheckpointError, ConfigError, TrainingInterrupted
from erlmr.methods import METHODS
from erlmr.training import runstate
from erlmr.training.checkpoint import load_checkpoint
from erlmr.training.trainer import evaluate, make_loader

from .conftest import (
    SMALL_RUN,
    epoch_records,
    send_signal,
    small_config,
    summary_results,
)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return erlmr.train(small_config(tmp_path_factory.mktemp("full") / "run"))


def interrupt(run_dir: Path, at_step, step: int, number: int = signal.SIGTERM) -> TrainingInterrupted:
    at_step(step, send_signal(number))
    with pytest.raises(TrainingInterrupted) as caught:
        erlmr.train(small_config(run_dir))
    return caught.value


def assert_same_run(resumed: erlmr.RunResult, uninterrupted: erlmr.RunResult) -> None:
    assert summary_results(resumed.summary) == summary_results(uninterrupted.summary)
    assert epoch_records(resumed.run_dir) == epoch_records(uninterrupted.run_dir)


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_epoch_saves_and_resume_matches_uninterrupted_run(
    tmp_path, at_step, monkeypatch, uninterrupted, number
):
    run_dir, before = tmp_path / "run", signal.getsignal(signal.SIGINT)  # SIG_IGN in a background job
    error = interrupt(run_dir, at_step, 20, number)  # 13 steps per epoch: step 7 of epoch 2
    assert error.signal_number == number
    assert "epoch 2, step 7" in str(error) and f"erlmr train --resume {run_dir}" in str(error)
    assert not (run_dir / "summary.json").exists()
    saved = load_checkpoint(run_dir / "last.pt")
    assert (saved["resume"]["epoch"], saved["resume"]["step"]) == (1, 7)
    assert len(epoch_records(run_dir)) == 1
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) is before  # the trainer put the handler back
    assert_same_run(erlmr.resume(run_dir), uninterrupted)


#: options some methods need on the small synthetic run
METHOD_OPTIONS = {"unimodal": {"modality": "m0"}}


@pytest.mark.parametrize("method", [*sorted(METHODS), "erlmr+ogm_ge"])
def test_every_method_resumes_exactly_and_loads_for_prediction(tmp_path, at_step, monkeypatch, method):
    """Each method's state_dict must hold all it keeps between steps (prototypes, running means, scores,
    private RNGs...); and a trained run of it must load without its dataset and predict without m1."""

    def config(run_dir):
        return small_config(
            run_dir, method={"name": method, "options": METHOD_OPTIONS.get(method, {})}, train={"epochs": 2}
        )

    try:
        full = erlmr.train(config(tmp_path / "full"))
    except ConfigError as error:
        pytest.skip(f"{method} does not train on the small synthetic run: {error}")
    at_step(20, send_signal(signal.SIGTERM))
    with pytest.raises(TrainingInterrupted):
        erlmr.train(config(tmp_path / "stopped"))
    monkeypatch.undo()
    assert_same_run(erlmr.resume(tmp_path / "stopped"), full)

    run = erlmr.load_run(full.run_dir)
    test = erlmr.data.load_dataset("synthetic", None, 0, 0.1, SMALL_RUN["data"]["options"]).test
    assert (
        evaluate(run.model, run.method, test, 64, torch.device("cpu"))["accuracy"] == full.summary["test"]["accuracy"]
    )
    if run.method.supports_missing_modalities:
        assert erlmr.predict(run, {"m0": test.inputs["m0"]}).probabilities.shape == (200, 4)


def test_cli_exits_128_plus_the_signal_and_says_how_to_resume(tmp_path, at_step, monkeypatch, capsys, uninterrupted):
    at_step(5, send_signal(signal.SIGINT))
    args = [
        "train",
        "--dataset",
        "synthetic",
        "--set",
        "data.options.train_size=400",
        "--set",
        "data.options.test_size=200",
        "--set",
        "model.euler_dim=32",
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--lr",
        "0.1",
        "--device",
        "cpu",
        "--quiet",
    ]
    assert main([*args, "--run-dir", str(tmp_path / "run"), "--method", "erlmr"]) == 128 + signal.SIGINT
    assert "training stopped by SIGINT at epoch 1, step 5" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(["train", "--resume", str(tmp_path / "run"), "--quiet"]) == 0
    assert epoch_records(tmp_path / "run") == epoch_records(uninterrupted.run_dir)


def test_signal_at_the_end_of_an_epoch_resumes_exactly(tmp_path, at_step, monkeypatch, uninterrupted):
    run_dir = tmp_path / "run"
    interrupt(run_dir, at_step, 13)  # the last step of epoch 1
    monkeypatch.undo()
    assert_same_run(erlmr.resume(run_dir), uninterrupted)


def test_resume_without_restoring_the_rng_state_differs(tmp_path, at_step, monkeypatch, uninterrupted):
    """The check above can fail: Euler dropout draws from the torch RNG, so resuming needs its state."""
    run_dir = tmp_path / "run"
    interrupt(run_dir, at_step, 20)
    monkeypatch.undo()
    monkeypatch.setattr("erlmr.training.trainer.restore_rng", lambda state: None)
    resumed = erlmr.resume(run_dir)
    assert epoch_records(resumed.run_dir) != epoch_records(uninterrupted.run_dir)


def test_data_order_is_a_function_of_seed_and_epoch_and_leaves_the_global_rng_alone():
    split = erlmr.data.load_dataset("synthetic", None, 0, 0.1, {"train_size": 100}).train
    state = torch.get_rng_state()
    first = [labels.tolist() for _, labels in make_loader(split, 16, True, 5, 0, False)]
    assert torch.equal(torch.get_rng_state(), state)
    again = [labels.tolist() for _, labels in make_loader(split, 16, True, 5, 0, False)]
    skipped = [labels.tolist() for _, labels in make_loader(split, 16, True, 5, 0, False, skip_batches=2)]
    other = [labels.tolist() for _, labels in make_loader(split, 16, True, 6, 0, False)]
    assert first == again and skipped == first[2:] and other != first


def test_kill_9_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    """A training subprocess killed with SIGKILL during its last epoch (3) continues from the epoch-2 checkpoint."""
    sizes = [
        "--set",
        "data.options.train_size=800",
        "--set",
        "data.options.test_size=200",
        "--set",
        "model.euler_dim=32",
    ]
    args = [
        "train",
        "--dataset",
        "synthetic",
        "--method",
        "erlmr",
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--quiet",
        *sizes,
    ]
    killed = tmp_path / "killed"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(torch.get_num_threads()),
        "PYTHONPATH": os.pathsep.join([str(Path(erlmr.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "erlmr", *args, "--run-dir", str(killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if (killed / "last.pt").exists() and load_checkpoint(killed / "last.pt")["resume"]["epoch"] == 2:
                break
            time.sleep(0.02)
        assert process.poll() is None, process.stderr.read().decode()
        last_line = (killed / "metrics.jsonl").read_text().splitlines()[-1]
        time.sleep(json.loads(last_line)["epoch_time_s"] / 3)  # into the third epoch
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        process.kill()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "summary.json").exists()
    assert [r["epoch"] for r in epoch_records(killed)] == [0, 1]  # it died inside epoch 3 (index 2)

    assert main(["train", "--resume", str(killed)]) == 0
    assert main([*args, "--run-dir", str(tmp_path / "full")]) == 0
    summaries = [
        summary_results(json.loads((tmp_path / name / "summary.json").read_text())) for name in ("killed", "full")
    ]
    assert summaries[0] == summaries[1]
    assert epoch_records(killed) == epoch_records(tmp_path / "full")


@pytest.fixture
def stopped_run(tmp_path, at_step, monkeypatch) -> Path:
    run_dir = tmp_path / "run"
    interrupt(run_dir, at_step, 20)
    monkeypatch.undo()
    return run_dir


def test_metrics_of_the_lost_part_are_dropped_on_resume(stopped_run, uninterrupted):
    with (stopped_run / "metrics.jsonl").open("a") as file:
        file.write(json.dumps({"epoch": 1, "train_loss": 9.0}) + "\n" + '{"epoch": 2, "train_lo')  # cut by a crash
    assert_same_run(erlmr.resume(stopped_run), uninterrupted)


def test_resume_refuses_an_edited_config(stopped_run):
    config = yaml.safe_load((stopped_run / "config.yaml").read_text())
    config["optim"]["lr"] = 0.5
    (stopped_run / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(
        CheckpointError,
        match=r"last\.pt was written by a different configuration.*optim\.lr: 0\.1 in the checkpoint, 0\.5 now",
    ):
        erlmr.resume(stopped_run)


def test_resume_refuses_a_checkpoint_of_another_run(stopped_run, tmp_path, at_step):
    other = tmp_path / "other"
    at_step(3, send_signal(signal.SIGTERM))
    with pytest.raises(TrainingInterrupted):
        erlmr.train(small_config(other, method={"name": "joint"}))
    (other / "last.pt").replace(stopped_run / "last.pt")
    with pytest.raises(CheckpointError, match=r"method\.name: 'joint' in the checkpoint, 'erlmr' now"):
        erlmr.resume(stopped_run)


def test_resume_refuses_weights_of_another_model(stopped_run):
    state = load_checkpoint(stopped_run / "last.pt")
    state["model"]["head.linear.weight"] = torch.zeros(4, 3)
    torch.save(state, stopped_run / "last.pt")
    with pytest.raises(
        CheckpointError, match=r"weights of another model: shapes differ: head\.linear\.weight \(4, 3\)"
    ):
        erlmr.resume(stopped_run)


def test_resume_refuses_a_checkpoint_trained_on_other_data(stopped_run):
    state = load_checkpoint(stopped_run / "last.pt")
    state["spec"]["input_shapes"]["m0"] = (31,)
    torch.save(state, stopped_run / "last.pt")
    with pytest.raises(
        CheckpointError, match=r"was trained on other data: input_shapes\.m0: \(31,\) in the checkpoint, \(32,\) now"
    ):
        erlmr.resume(stopped_run)


def test_best_pt_can_stand_in_for_a_damaged_last_pt(tmp_path):
    """best.pt holds the full training state too: copied over last.pt, the run replays the later epochs."""
    import shutil

    full = erlmr.train(small_config(tmp_path / "full", method={"name": "joint"}))
    assert full.summary["best_epoch"] == 0  # so that two epochs are replayed
    run_dir = tmp_path / "run"
    shutil.copytree(full.run_dir, run_dir)
    (run_dir / "summary.json").unlink()
    shutil.copy(run_dir / "best.pt", run_dir / "last.pt")
    assert_same_run(erlmr.resume(run_dir), full)


def test_resume_refuses_a_truncated_checkpoint(stopped_run):
    path = stopped_run / "last.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} is corrupt or truncated"):
        erlmr.resume(stopped_run)


def test_resume_refuses_flags_that_change_results_and_finished_runs(stopped_run, uninterrupted, capsys):
    assert main(["train", "--resume", str(stopped_run), "--lr", "0.1"]) == 2
    assert "['optim.lr'] would change its results" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="has already completed"):
        erlmr.resume(uninterrupted.run_dir)
    with pytest.raises(CheckpointError, match="not a run folder"):
        erlmr.resume(stopped_run / "missing")
    (stopped_run / "last.pt").unlink()
    with pytest.raises(CheckpointError, match="has no last.pt: it stopped before its first checkpoint"):
        erlmr.resume(stopped_run)


def test_a_new_run_never_overwrites_an_unfinished_one(stopped_run):
    before = (stopped_run / "last.pt").read_bytes()
    with pytest.raises(
        ConfigError, match=rf"holds an unfinished run; continue it with: erlmr train --resume {stopped_run}"
    ):
        erlmr.train(small_config(stopped_run))
    assert (stopped_run / "last.pt").read_bytes() == before


def test_method_state_is_saved_and_restored(stopped_run):
    saved = load_checkpoint(stopped_run / "last.pt")
    assert saved["fingerprint"] == runstate.config_fingerprint(saved["config"])
    assert set(saved["resume"]["rng"]) >= {"torch", "numpy", "python"}
