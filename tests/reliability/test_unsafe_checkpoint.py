"""A checkpoint is data, never code: a crafted .pt whose pickle calls os.system is refused, and nothing runs."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import erlmr
from erlmr.cli import main
from erlmr.errors import CheckpointError
from erlmr.training.checkpoint import load_checkpoint

from .conftest import small_config


class RunsACommand:
    """Unpickling this calls ``os.system(command)``: what a malicious checkpoint does."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def plant(path: Path, marker: Path, form: str) -> None:
    """Replace the checkpoint at ``path`` with one whose unpickling would create ``marker``."""
    payload = {"model": RunsACommand(f"touch {marker}"), "format": 1}
    if form == "torch.save":
        torch.save(payload, path)
    else:  # a bare pickle, the legacy format torch.load also reads
        path.write_bytes(pickle.dumps(payload, protocol=2))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    return erlmr.train(
        small_config(tmp_path_factory.mktemp("unsafe") / "run", method={"name": "joint"}, train={"epochs": 1})
    ).run_dir


@pytest.fixture
def planted(finished, tmp_path, request):
    """(run folder, marker): a copy of the finished run, unfinished again, with both checkpoints crafted."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    (run_dir / "summary.json").unlink()
    marker = tmp_path / "MARKER"
    for name in ("best.pt", "last.pt"):
        plant(run_dir / name, marker, request.param)
    return run_dir, marker


def test_the_crafted_checkpoint_would_run_its_command_if_unpickled(tmp_path):
    """The check below can fail: loading the crafted file the unsafe way does create the marker."""
    path, marker = tmp_path / "x.pt", tmp_path / "MARKER"
    plant(path, marker, "torch.save")
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("planted", ["torch.save", "pickle"], indirect=True)
def test_eval_resume_and_load_run_refuse_it_without_running_it(planted, capsys):
    run_dir, marker = planted
    assert main(["eval", str(run_dir), "--device", "cpu"]) == 2
    assert f"checkpoint {run_dir / 'best.pt'} " in capsys.readouterr().err
    assert main(["train", "--resume", str(run_dir)]) == 2
    assert f"checkpoint {run_dir / 'last.pt'} " in capsys.readouterr().err
    with pytest.raises(CheckpointError, match=rf"checkpoint {run_dir / 'best.pt'} "):
        erlmr.load_run(run_dir)
    assert not marker.exists()


@pytest.mark.parametrize("planted", ["torch.save"], indirect=True)
def test_the_refusal_says_why_and_gives_no_unsafe_advice(planted):
    run_dir, marker = planted
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(run_dir / "last.pt")
    message = str(caught.value)
    assert "holds a pickled posix.system, not only tensors and plain containers" in message
    assert "can run arbitrary code" in message and "weights_only" not in message
    assert not marker.exists()


def test_checkpoints_hold_only_tensors_and_plain_containers(finished):
    """What erlmr writes loads under weights_only=True: its RNG states are tensors and tuples of ints."""
    state = torch.load(finished / "last.pt", weights_only=True)
    kind, keys, position, *_ = state["resume"]["rng"]["numpy"]
    assert kind == "MT19937" and isinstance(keys, torch.Tensor) and keys.shape == (624,) and isinstance(position, int)
    assert all(isinstance(v, int) for v in state["resume"]["rng"]["python"][1])


def test_a_pickle_torch_cannot_parse_is_refused_as_corrupt(tmp_path):
    path, marker = tmp_path / "last.pt", tmp_path / "MARKER"
    path.write_bytes(pickle.dumps({"model": RunsACommand(f"touch {marker}")}, protocol=4))
    with pytest.raises(
        CheckpointError,
        match=rf"checkpoint {path} is corrupt or not a torch checkpoint \(unsupported "
        r"operand 149\); erlmr loads only tensors and plain containers from it",
    ):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_checkpoint_holding_a_numpy_array_is_named_as_such(tmp_path):
    """What an erlmr before weights-only loading wrote: numpy's RNG state as a pickled array."""
    path = tmp_path / "last.pt"
    torch.save({"model": {}, "resume": {"rng": {"numpy": ("MT19937", np.zeros(624, np.uint32), 0, 0, 0.0)}}}, path)
    with pytest.raises(
        CheckpointError,
        match=rf"checkpoint {path} holds a pickled numpy array \(numpy\..*\), not only tensors "
        r"and plain containers; erlmr versions before weights-only loading stored numpy's random state",
    ):
        load_checkpoint(path)
