import json

import numpy as np
import pytest
import torch

from erlmr import DataError
from erlmr.cli import main
from erlmr.data import load_dataset


def write_array_folder(root, n_train=40, n_test=12, shapes=None, seed=0, meta=True):
    shapes = shapes or {"vec": (6,), "seq": (2, 16), "img": (1, 8, 8)}
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 3
        arrays = {
            m: (rng.standard_normal((n, *s)) + labels.reshape(-1, *[1] * len(s))).astype(np.float32)
            for m, s in shapes.items()
        }
        np.savez(root / f"{split}.npz", label=labels, **arrays)
    if meta:
        (root / "meta.json").write_text(json.dumps({"modalities": list(shapes), "classes": ["a", "b", "c"]}))
    return root


def test_array_folder_loads_with_a_stratified_seeded_validation_split(tmp_path):
    root = write_array_folder(tmp_path / "d")
    splits = load_dataset("arrays", str(root), seed=3, val_fraction=0.25, options={})
    assert splits.modalities == ["vec", "seq", "img"] and splits.classes == ["a", "b", "c"]
    assert len(splits.train) + len(splits.val) == 40 and len(splits.test) == 12
    assert torch.bincount(splits.val.labels).tolist() == [4, 3, 3]  # a quarter of 14, 13, 13, rounded
    assert splits.input_shapes() == {"vec": (6,), "seq": (2, 16), "img": (1, 8, 8)}
    again = load_dataset("arrays", str(root), seed=3, val_fraction=0.25, options={})
    torch.testing.assert_close(again.val.inputs["vec"], splits.val.inputs["vec"])


def test_array_folder_uses_val_npz_and_infers_modalities_without_meta(tmp_path):
    root = write_array_folder(tmp_path / "d", meta=False, shapes={"a": (4,), "b": (5,)})
    np.savez(root / "val.npz", label=np.array([0, 1]), a=np.zeros((2, 4), np.float32), b=np.zeros((2, 5), np.float32))
    splits = load_dataset("arrays", str(root), seed=0, val_fraction=0.1, options={})
    assert splits.modalities == ["a", "b"] and len(splits.val) == 2 and len(splits.train) == 40
    assert splits.classes == ["0", "1", "2"]


def test_default_encoders_follow_each_arrays_shape_and_train_through_the_cli(tmp_path, capsys):
    root = write_array_folder(tmp_path / "d")
    code = main(
        ["train", "--data", str(root), "--method", "erlmr", "--epochs", "1", "--quiet", "--out", str(tmp_path / "runs")]
    )
    assert code == 0
    run_dir = next((tmp_path / "runs").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["test"]["modality_accuracy"]) == {"vec", "seq", "img"}
    from erlmr.training.trainer import Trainer

    model = Trainer(str(run_dir / "config.yaml")).model
    kinds = {m: type(e).__name__ for m, e in model.encoders.items()}
    assert kinds == {"vec": "MLPEncoder", "seq": "ConvEncoder", "img": "ConvEncoder"}


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: (r / "test.npz").unlink(), r"missing file .*test\.npz"),
        (
            lambda r: np.savez(
                r / "train.npz",
                label=np.array([0, 5]),
                vec=np.zeros((2, 6)),
                seq=np.zeros((2, 2, 16)),
                img=np.zeros((2, 1, 8, 8)),
            ),
            r"label 5 at index 1 is out of range",
        ),
        (
            lambda r: np.savez(
                r / "train.npz",
                label=np.array([0, 1, 2]),
                vec=np.zeros((2, 6)),
                seq=np.zeros((3, 2, 16)),
                img=np.zeros((3, 1, 8, 8)),
            ),
            r"sample counts .* differ",
        ),
        (
            lambda r: np.savez(
                r / "train.npz",
                label=np.array([0, 1]),
                vec=np.array([[0.0] * 6, [np.nan] + [0.0] * 5]),
                seq=np.zeros((2, 2, 16)),
                img=np.zeros((2, 1, 8, 8)),
            ),
            r"NaN or Inf in 1 sample\(s\), first at index 1",
        ),
        (lambda r: (r / "train.npz").write_bytes(b"not a zip"), r"cannot read .*train\.npz"),
        (lambda r: (r / "meta.json").write_text("{"), r"meta\.json is not valid JSON"),
        (
            lambda r: np.savez(r / "train.npz", label=np.array([0, 1]), vec=np.zeros((2, 6)), seq=np.zeros((2, 2, 16))),
            r"lacks modality array\(s\) \['img'\]",
        ),
    ],
)
def test_bad_array_folders_get_clear_errors_naming_the_file(tmp_path, damage, message):
    root = write_array_folder(tmp_path / "d")
    damage(root)
    with pytest.raises(DataError, match=message):
        load_dataset("arrays", str(root), seed=0, val_fraction=0.1, options={})


def test_missing_folder_and_missing_path_are_clear(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("arrays", str(tmp_path / "nope"), seed=0, val_fraction=0.1, options={})
    with pytest.raises(DataError, match="--data PATH"):
        load_dataset("arrays", None, seed=0, val_fraction=0.1, options={})


def test_basicmotions_is_the_real_uea_set_from_the_aeon_wheel():
    splits = load_dataset("basicmotions", None, seed=0, val_fraction=0.1, options={})
    assert splits.modalities == ["acc", "gyro"]
    assert splits.classes == ["badminton", "running", "standing", "walking"]
    assert len(splits.train) + len(splits.val) == 40 and len(splits.test) == 40
    assert splits.input_shapes() == {"acc": (3, 100), "gyro": (3, 100)}
    assert torch.bincount(splits.test.labels).tolist() == [10, 10, 10, 10]
    # Standardised with training statistics: train channels have mean ~0 and std ~1.
    train_acc = torch.cat([splits.train.inputs["acc"], splits.val.inputs["acc"]])
    assert train_acc.mean(dim=(0, 2)).abs().max() < 1e-4


def test_synthetic_is_seeded_and_supports_more_modalities():
    a = load_dataset("synthetic", None, seed=0, val_fraction=0.1, options={"strengths": [3, 1, 0.5], "train_size": 50})
    b = load_dataset("synthetic", None, seed=5, val_fraction=0.1, options={"strengths": [3, 1, 0.5], "train_size": 50})
    assert a.modalities == ["m0", "m1", "m2"]
    torch.testing.assert_close(a.train.inputs["m2"], b.train.inputs["m2"])
    c = load_dataset(
        "synthetic",
        None,
        seed=0,
        val_fraction=0.1,
        options={"strengths": [3, 1, 0.5], "train_size": 50, "generator_seed": 1},
    )
    assert not torch.allclose(a.train.inputs["m0"], c.train.inputs["m0"])


def test_basicmotions_erlmr_reaches_090_test_accuracy_through_the_cli(tmp_path, capsys):
    assert main(["train", "--dataset", "basicmotions", "--method", "erlmr", "--quiet", "--out", str(tmp_path)]) == 0
    run_dir = next(tmp_path.iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test"]["accuracy"] >= 0.9, summary
    assert {"config.yaml", "metrics.jsonl", "best.pt", "last.pt", "summary.json"} <= {p.name for p in run_dir.iterdir()}
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 30
