"""Second pass over bad input: each case gets one line naming the problem (never a traceback), and no message
claims what is not so."""

from __future__ import annotations

import math
import zipfile

import numpy as np
import pytest
import torch

import erlmr
from erlmr.cli import main
from erlmr.data import load_dataset
from erlmr.errors import DataError, TrainingDivergedError

from .conftest import small_config
from .test_guards import poison_gradient, write_folder

SYNTHETIC = [
    "--dataset",
    "synthetic",
    "--epochs",
    "1",
    "--device",
    "cpu",
    "--quiet",
    "--set",
    "data.options.train_size=100",
    "--set",
    "data.options.test_size=50",
]


def one_line_error(capsys) -> str:
    """The CLI's stderr, which must be one ``erlmr: error:`` line."""
    error = capsys.readouterr().err
    assert error.startswith("erlmr: error: ") and error.count("\n") == 1, error
    return error


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--seed", "-1"], "train.seed must be in 0..4294967295 (numpy takes 32-bit seeds), got -1"),
        (["--seed", str(2**63)], f"train.seed must be in 0..4294967295 (numpy takes 32-bit seeds), got {2**63}"),
        (
            ["--set", "model.encoders={a: mlp"],
            "override 'model.encoders={a: mlp': the value '{a: mlp' is not valid YAML",
        ),
        (["--set", "optim.lr=[1"], "override 'optim.lr=[1': the value '[1' is not valid YAML (expected ',' or ']'"),
        (["--lr", "nan"], "optim.lr is NaN; give a number"),
        (["--lr", "inf"], "optim.lr must be a finite number, got inf"),
        (
            ["--method", "joint", "--set", "method.options.x=1"],
            "unknown key(s) ['x'] in method.options of 'joint'; it takes none",
        ),
        (["--set", "model.encoder_options.m0.layers=0"], "options of encoder 'mlp': option layers must be >= 1, got 0"),
        (["--set", "model.encoders.m0=[1]"], "encoder names are strings, got [1]; valid encoders: cnn1d, cnn2d"),
    ],
)
def test_bad_flags_get_one_line(tmp_path, capsys, flags, message):
    assert main(["train", *SYNTHETIC, "--run-dir", str(tmp_path / "run"), *flags]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize(
    "text, kind", [("[1, 2]\n", "a list: [1, 2]"), ("3\n", "a single value: 3"), ("'x'\n", "a single value: x")]
)
def test_a_config_file_that_is_not_a_mapping_gets_one_line(tmp_path, capsys, text, kind):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert main(["train", "--config", str(path), "--epochs", "1"]) == 2
    assert (
        f"config file {path} must hold a mapping of sections (data:, model:, method:, optim:, train:), got {kind}"
        in one_line_error(capsys)
    )


def with_claimed_shape(path, name: str, shape: tuple[int, ...]) -> None:
    """Rewrite the header of array ``name`` in the .npz at ``path`` to claim ``shape``; its data stays."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    raw = members[f"{name}.npy"]
    data = raw[raw.index(b"\n") + 1 :]  # the header ends at its first newline
    header = repr({"descr": "<f4", "fortran_order": False, "shape": shape}).encode() + b"\n"
    members[f"{name}.npy"] = np.lib.format.magic(1, 0) + len(header).to_bytes(2, "little") + header + data
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)


def test_an_npz_header_claiming_an_absurd_shape_is_refused_before_allocating(tmp_path):
    root = write_folder(tmp_path / "data", n_train=60)
    with_claimed_shape(root / "train.npz", "a", (60, 10**12))
    with pytest.raises(
        DataError,
        match=r"train\.npz: array 'a' claims shape \(60, 1000000000000\) of float32 "
        r"\(240000000000000 bytes\) but holds 1440 bytes: the file is damaged",
    ):
        load_dataset("arrays", str(root), 0, 0.1, {})
    with_claimed_shape(root / "train.npz", "a", (60, 6))  # the same file with an honest header loads
    assert load_dataset("arrays", str(root), 0, 0.1, {}).train.inputs["a"].shape[1:] == (6,)


@pytest.mark.parametrize("header", [b"{", b"{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 6)}", b"\x00\xff"])
def test_an_npz_header_numpy_cannot_parse_is_one_line(tmp_path, header):
    from .test_arrays_fuzz import damage_header

    root = write_folder(tmp_path / "data")
    damage_header(root / "test.npz", "a", "text", header)
    with pytest.raises(DataError, match=r"cannot read .*test\.npz: .*; re-create it with numpy\.savez"):
        load_dataset("arrays", str(root), 0, 0.1, {})


def test_random_bytes_are_not_reported_as_pickled_data(tmp_path):
    root = write_folder(tmp_path / "data")
    (root / "test.npz").write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(DataError) as caught:
        load_dataset("arrays", str(root), 0, 0.1, {})
    message = str(caught.value)
    assert "test.npz: it is not an .npz archive (a zip file); it starts with the bytes" in message
    assert "pickle" not in message


def test_an_object_array_is_refused_without_advice_to_unpickle(tmp_path):
    root = write_folder(tmp_path / "data", **{"train.npz": {"b": np.array([[{}]] * 40, dtype=object)}})
    with pytest.raises(DataError, match=r"train\.npz: array 'b' holds Python objects, which erlmr does not unpickle"):
        load_dataset("arrays", str(root), 0, 0.1, {})


def test_an_npz_member_that_is_not_an_array_is_refused(tmp_path):
    root = write_folder(tmp_path / "data")
    with zipfile.ZipFile(root / "train.npz", "a") as archive:
        archive.writestr("notes.txt", "recorded on Tuesday")
    with pytest.raises(DataError, match=r"cannot read .*train\.npz: its member 'notes\.txt' is not a \.npy array"):
        load_dataset("arrays", str(root), 0, 0.1, {})


def test_divergence_in_the_first_epoch_says_no_checkpoint_was_kept(tmp_path, at_step):
    at_step(3, poison_gradient)
    run_dir = tmp_path / "run"
    with pytest.raises(
        TrainingDivergedError,
        match=r"diverged at epoch 1, step 3: .*; no checkpoint was written yet "
        r"\(it diverged in the first epoch\)$",
    ):
        erlmr.train(small_config(run_dir, method={"name": "joint"}))
    assert not (run_dir / "last.pt").exists()


def test_divergence_later_names_the_checkpoint_kept(tmp_path, at_step):
    at_step(13 + 2, poison_gradient)
    run_dir = tmp_path / "run"
    with pytest.raises(
        TrainingDivergedError,
        match=r"diverged at epoch 2, step 2: .*; the last good checkpoint is "
        r"kept in the run folder$",
    ):
        erlmr.train(small_config(run_dir, method={"name": "joint"}))


def test_bench_names_only_the_files_it_wrote(tmp_path, capsys):
    out = tmp_path / "bench"
    out.mkdir()
    (out / "results.csv").write_text("dataset,method\nold,grid\n")  # left by an earlier bench
    assert (
        main(
            [
                "bench",
                "--datasets",
                "synthetic",
                "--methods",
                "no_such_method",
                "--seeds",
                "1",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 1
    )
    printed = capsys.readouterr().out
    assert "No finished run." in printed and f"results: {out / 'results.md'}, {out / 'bench.json'}\n" in printed
    assert not (out / "results.csv").exists()


def test_predict_with_no_sample_says_so(tmp_path):
    run = erlmr.load_run(
        erlmr.train(small_config(tmp_path / "run", method={"name": "joint"}, train={"epochs": 1})).run_dir
    )
    with pytest.raises(DataError, match=r"the inputs hold no sample \(\{'m0': 0, 'm1': 0\}\); give at least one row"):
        erlmr.predict(run, {"m0": torch.zeros(0, 32), "m1": np.zeros((0, 32))})
    assert math.isclose(float(erlmr.predict(run, {"m0": torch.zeros(1, 32)}).probabilities.sum()), 1.0, rel_tol=1e-6)
