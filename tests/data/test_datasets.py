"""The field's datasets read from fixture folders in their real layouts, trained through the CLI, and the
errors a bad folder gives."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import warnings
from pathlib import Path

import dataset_fixtures as fx
import numpy as np
import pytest
import torch

from erlmr.cli import main
from erlmr.data import load_dataset
from erlmr.errors import DataError

SMALL_IMAGES = {"image_size": 32}
# name: (fixture writer, data options, sample shape per modality, encoder options for a fast CLI run)
CASES = {
    "crema-d": (fx.write_crema_d, SMALL_IMAGES, {"audio": (1, 257, 188), "visual": (3, 1, 32, 32)}, "width=8"),
    "ave": (fx.write_ave, SMALL_IMAGES, {"audio": (1, 257, 1004), "visual": (3, 3, 32, 32)}, "width=8"),
    "kinetics-sounds": (
        fx.write_kinetics_sounds,
        SMALL_IMAGES,
        {"audio": (1, 1024, 128), "visual": (3, 3, 32, 32)},
        "width=8",
    ),
    "vggsound": (fx.write_vggsound, SMALL_IMAGES, {"audio": (1, 129, 626), "visual": (3, 3, 32, 32)}, "width=8"),
    "ucf101": (fx.write_ucf101, SMALL_IMAGES, {"rgb": (3, 3, 32, 32), "flow": (2, 3, 32, 32)}, "width=8"),
    "cmu-mosei": (fx.write_cmu_mosei, {}, {"audio": (74, 50), "visual": (35, 50), "text": (300, 50)}, "d_model=16"),
    "usc-had": (fx.write_usc_had, {}, {"acc": (3, 200), "gyro": (3, 200)}, None),
    "utd-mhad": (fx.write_utd_mhad, {}, {"inertial": (6, 128), "skeleton": (20, 3, 128)}, None),
}


def cli_train(name: str, root: Path, run_dir: Path, extra: list[str] = ()) -> dict:
    _, options, shapes, encoder_option = CASES[name]
    sets = [f"data.options.{k}={v}" for k, v in options.items()]
    if encoder_option:
        sets += [f"model.encoder_options.{m}.{encoder_option}" for m in shapes]
    argv = [
        "train",
        "--dataset",
        name,
        "--data",
        str(root),
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--quiet",
        "--run-dir",
        str(run_dir),
        *extra,
    ]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 0
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.parametrize("name", list(CASES))
def test_loader_reads_the_real_layout_and_trains_one_epoch(name, tmp_path):
    writer, options, shapes, _ = CASES[name]
    info = writer(tmp_path / name)
    splits = load_dataset(name, str(tmp_path / name), 0, 0.1, options)
    rows = info.get("windows", 1)

    assert splits.input_shapes() == shapes
    assert splits.num_classes == len(splits.classes) == info["classes"]
    assert len(splits.train) + len(splits.val) == info["train"] * rows
    assert len(splits.test) == info["test"] * rows
    if "val" in info:  # an official validation split, used as is
        assert len(splits.val) == info["val"] * rows
    for split in (splits.train, splits.val, splits.test):
        inputs, labels = split.__getitems__(list(range(len(split))))
        assert ((labels >= 0) & (labels < splits.num_classes)).all()
        for m, shape in shapes.items():
            assert inputs[m].dtype == torch.float32 and inputs[m].shape == (len(split), *shape)
            assert torch.isfinite(inputs[m]).all()
    keys = {s: set(splits.keys[s]) for s in ("train", "val", "test")}
    groups = {s: set(splits.groups[s]) for s in ("train", "val", "test")}
    assert not groups["train"] & groups["test"] and not groups["val"] & groups["test"]
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"]

    summary = cli_train(name, tmp_path / name, tmp_path / "run")
    assert summary["classes"] == splits.classes
    assert 0.0 <= summary["test"]["accuracy"] <= 1.0


def labels_by_key(splits, split: str) -> dict[str, str]:
    return {k: splits.classes[int(y)] for k, y in zip(splits.keys[split], getattr(splits, split).labels)}


def test_crema_d_labels_follow_the_csv_in_ogm_ge_class_order(tmp_path):
    fx.write_crema_d(tmp_path)
    splits = load_dataset("crema-d", str(tmp_path), 0, 0.1, SMALL_IMAGES)
    assert splits.classes == ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]
    for split in ("train", "val", "test"):
        for clip, label in labels_by_key(splits, split).items():
            assert label == clip.split("_")[2]
    assert len(splits.val) == 3  # one clip of each of the three classes present, seeded
    assert load_dataset("crema-d", str(tmp_path), 0, 0.1, SMALL_IMAGES).keys["val"] == splits.keys["val"]  # seeded


def test_ave_uses_pmr_class_order_and_leaves_out_doubly_labelled_videos(tmp_path):
    fx.write_ave(tmp_path)
    splits = load_dataset("ave", str(tmp_path), 0, 0.1, SMALL_IMAGES)
    assert splits.classes[:3] == ["Church bell", "Male speech, man speaking", "Bark"]
    assert labels_by_key(splits, "val") == {"2An2JMGMbbs": "Church bell", "0-ld_I8GbQE": "Male speech, man speaking"}
    assert all("-1qyr-IzqKY" not in splits.keys[s] for s in ("train", "val", "test"))


def test_vggsound_keeps_verbatim_labels_and_finds_zero_padded_names(tmp_path):
    fx.write_vggsound(tmp_path)
    splits = load_dataset("vggsound", str(tmp_path), 0, 0.5, SMALL_IMAGES)
    assert splits.classes == ["people marching", "bee, wasp, etc. buzzing"]
    assert "-0Gfz9zX0Ck_30" in splits.keys["train"] + splits.keys["val"]  # stored as -0Gfz9zX0Ck_000030.wav
    assert labels_by_key(splits, "test") == {
        "-2Rfm5HGe8c_12": "people marching",
        "-4rVk5CzBoI_150": "bee, wasp, etc. buzzing",
    }


def test_ucf101_matches_folders_without_case_and_carves_val_from_whole_groups(tmp_path):
    fx.write_ucf101(tmp_path)
    splits = load_dataset("ucf101", str(tmp_path), 0, 0.1, SMALL_IMAGES)
    assert splits.classes[36] == "HandstandPushups"
    assert "v_HandStandPushups_g01_c02" in splits.keys["test"]
    assert len(set(splits.groups["val"])) == 1 and not set(splits.groups["val"]) & set(splits.groups["train"])
    assert set(splits.groups["test"]) == {"g01"}
    flow, _ = splits.test.__getitems__([0])
    assert flow["flow"].min() >= -1 and flow["flow"].max() <= 1


def test_cmu_mosei_binary_sentiment_and_excluded_zeros(tmp_path):
    fx.write_cmu_mosei(tmp_path)
    splits = load_dataset("cmu-mosei", str(tmp_path), 0, 0.1, {})
    assert splits.train.labels.tolist() == [
        0,
        1,
        1,
        1,
        0,
        1,
    ]  # scores -1.2, 0, 0.6, 2.4, -2, 1: zero counts as positive
    assert splits.test.labels.tolist() == [0, 1, 1, 1]
    non_zero = load_dataset("cmu-mosei", str(tmp_path / "mosei_senti_data.pkl"), 0, 0.1, {"exclude_zero": True})
    assert non_zero.train.labels.tolist() == [0, 1, 1, 0, 1] and non_zero.test.labels.tolist() == [0, 1, 1]
    audio = pickle.loads((tmp_path / "mosei_senti_data.pkl").read_bytes())["train"]["audio"]
    stored, _ = splits.train.__getitems__([0])
    assert stored["audio"][0, 5, 3] == 0  # the -inf COVAREP value
    assert torch.equal(stored["audio"][0, :, 4], torch.from_numpy(audio[0, 4]))  # (steps, features) → (features, steps)


class RunsACommand:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cmu_mosei_pickle_is_read_without_running_code(tmp_path, protocol):
    """The feature pickle loads (whatever protocol wrote it) but an object other than arrays is refused unbuilt."""
    fx.write_cmu_mosei(tmp_path)
    path = tmp_path / "mosei_senti_data.pkl"
    data = pickle.loads(path.read_bytes())
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    assert load_dataset("cmu-mosei", str(tmp_path), 0, 0.1, {"cache": False}).train.labels.tolist() == [
        0,
        1,
        1,
        1,
        0,
        1,
    ]
    data["valid"]["id"] = RunsACommand(f"touch {tmp_path / 'MARKER'}")
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    with pytest.raises(
        DataError, match=rf"cannot read the pickle {path}: it holds a pickled posix\.system, not only numpy"
    ):
        load_dataset("cmu-mosei", str(tmp_path), 0, 0.1, {"cache": False})
    assert not (tmp_path / "MARKER").exists()


def test_usc_had_windows_subject_wise_and_standardised_on_train(tmp_path):
    info = fx.write_usc_had(tmp_path)
    splits = load_dataset("usc-had", str(tmp_path), 0, 0.1, {})
    assert set(splits.groups["test"]) == {"subject 13", "subject 14"}
    assert set(splits.groups["train"]) | set(splits.groups["val"]) == {"subject 1", "subject 2"}
    assert len(splits.test) == 6 * info["windows"]
    keys = splits.keys["train"]
    assert all(keys.count(k) == info["windows"] for k in keys)  # a recording's windows stay together
    training = torch.cat(
        [
            splits.train.__getitems__(list(range(len(splits.train))))[0]["gyro"],
            splits.val.__getitems__(list(range(len(splits.val))))[0]["gyro"],
        ]
    )
    assert torch.allclose(training.mean(dim=(0, 2)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(training.std(dim=(0, 2)), torch.ones(3), atol=1e-2)
    halves = load_dataset("usc-had", str(tmp_path), 0, 0.1, {"window": 100, "stride": 100})
    assert halves.input_shapes()["acc"] == (3, 100) and len(halves.test) == 6 * 4


def test_utd_mhad_cross_subject_protocol_and_optional_depth(tmp_path):
    info = fx.write_utd_mhad(tmp_path, depth=True)
    splits = load_dataset(
        "utd-mhad", str(tmp_path), 0, 0.1, {"modalities": ["inertial", "skeleton", "depth"], "image_size": 16}
    )
    assert set(splits.groups["test"]) == {"subject 2"}
    assert "a8_s1_t4" not in splits.keys["train"] + splits.keys["val"]
    assert splits.input_shapes()["depth"] == (1, 4, 16, 16)
    assert splits.default_encoders == {"inertial": "sensor_cnn", "skeleton": "skeleton", "depth": "resnet18"}
    assert len(splits.train) + len(splits.val) == info["train"]


def test_erlmr_trains_on_usc_had_with_the_papers_sensor_features(tmp_path):
    fx.write_usc_had(tmp_path / "usc")
    summary = cli_train("usc-had", tmp_path / "usc", tmp_path / "run", ["--method", "erlmr"])
    assert summary["method"] == "erlmr"


# ------------------------------------------------------------------------------------------ caching


def test_prepare_writes_a_memory_mapped_cache_that_training_reads_without_the_media(tmp_path, capsys):
    fx.write_crema_d(tmp_path)
    assert main(["data", "prepare", "crema-d", "--root", str(tmp_path), "--set", "image_size=32"]) == 0
    printed = capsys.readouterr().out
    assert "6 train / 3 test samples, 6 classes" in printed and ".erlmr-cache" in printed
    decoded = load_dataset("crema-d", str(tmp_path), 0, 0.1, {"image_size": 32, "cache": False})
    shutil.rmtree(tmp_path / "AudioWAV")
    shutil.rmtree(tmp_path / "Image-01-FPS")
    cached = load_dataset("crema-d", str(tmp_path), 0, 0.1, {"image_size": 32})
    assert cached.train.inputs["audio"] is cached.test.inputs["audio"]  # one store, not a copy per split
    assert np.load(cached.cache / "visual.npy", mmap_mode="r").dtype == np.float16
    for split in ("train", "val", "test"):
        a, b = getattr(decoded, split), getattr(cached, split)
        (x, y), (u, v) = a.__getitems__(list(range(len(a)))), b.__getitems__(list(range(len(b))))
        assert torch.equal(y, v) and torch.allclose(x["audio"], u["audio"]) and torch.allclose(x["visual"], u["visual"])
    with pytest.raises(DataError, match="AudioWAV"):  # other options mean other arrays: decoded again
        load_dataset("crema-d", str(tmp_path), 0, 0.1, {"image_size": 16})


def test_a_cache_whose_lists_changed_is_rebuilt(tmp_path):
    fx.write_crema_d(tmp_path)
    load_dataset("crema-d", str(tmp_path), 0, 0.1, SMALL_IMAGES)
    clip = "1009_DFA_SAD_XX"
    fx.write_wav(tmp_path / "AudioWAV" / f"{clip}.wav")
    fx.write_jpeg(tmp_path / "Image-01-FPS" / clip / "00000.jpg")
    with (tmp_path / "test.csv").open("ab") as file:
        file.write(f"{clip},SAD\r\n".encode())
    with pytest.warns(UserWarning, match="changed"):
        splits = load_dataset("crema-d", str(tmp_path), 0, 0.1, SMALL_IMAGES)
    assert clip in splits.keys["test"] and len(splits.test) == 4


def test_split_rows_share_one_store_and_return_float32():
    from erlmr.data import Split

    store = {"x": torch.arange(20, dtype=torch.float16).view(10, 2)}
    split = Split(store, torch.arange(4), rows=torch.tensor([9, 7, 5, 3]))
    inputs, labels = split.__getitems__([1, 3])
    assert (
        inputs["x"].dtype == torch.float32 and inputs["x"][:, 0].tolist() == [14.0, 6.0] and labels.tolist() == [1, 3]
    )
    part = split.subset([2, 0])
    assert part.inputs["x"] is store["x"] and part.rows.tolist() == [5, 9] and part[0][0]["x"].tolist() == [10.0, 11.0]
    with pytest.raises(DataError, match="rows must lie in"):
        Split(store, torch.arange(1), rows=torch.tensor([10]))


# ------------------------------------------------------------------------------------------- errors


def load_crema(root: Path, **options):
    return load_dataset("crema-d", str(root), 0, 0.1, {**SMALL_IMAGES, "cache": False, **options})


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(DataError, match=f"missing folder {tmp_path / 'nowhere'}"):
        load_dataset("crema-d", str(tmp_path / "nowhere"), 0, 0.1, {})
    with pytest.raises(DataError, match="needs its folder: pass --data PATH"):
        load_dataset("usc-had", None, 0, 0.1, {})


def test_missing_file_is_named(tmp_path):
    info = fx.write_crema_d(tmp_path)
    wav = tmp_path / "AudioWAV" / f"{info['clips'][2]}.wav"
    wav.unlink()
    with pytest.raises(DataError, match=f"missing file {wav}.*skip_bad=true"):
        load_crema(tmp_path)
    (tmp_path / "test.csv").unlink()
    with pytest.raises(DataError, match=f"missing file {tmp_path / 'test.csv'}"):
        load_crema(tmp_path)


def test_unreadable_files_are_named(tmp_path):
    info = fx.write_crema_d(tmp_path / "crema")
    frame = tmp_path / "crema" / "Image-01-FPS" / info["clips"][0] / "00030.jpg"
    frame.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(DataError, match=f"cannot read image {frame}"):
        load_crema(tmp_path / "crema")
    fx.write_usc_had(tmp_path / "usc")
    mat = tmp_path / "usc" / "Subject2" / "a3t1.mat"
    mat.write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with pytest.raises(DataError, match=f"cannot read MATLAB file {mat}"):
        load_dataset("usc-had", str(tmp_path / "usc"), 0, 0.1, {"cache": False})
    fx.write_cmu_mosei(tmp_path / "mosei")
    (tmp_path / "mosei" / "mosei_senti_data.pkl").write_bytes(b"\x80\x04 broken")
    with pytest.raises(DataError, match="cannot read the pickle .*mosei_senti_data.pkl"):
        load_dataset("cmu-mosei", str(tmp_path / "mosei"), 0, 0.1, {})


def test_a_recording_whose_modalities_disagree_is_named(tmp_path):
    fx.write_utd_mhad(tmp_path / "utd")
    skeleton = tmp_path / "utd" / "Skeleton" / "a1_s3_t2_skeleton.mat"
    skeleton.unlink()
    with pytest.raises(DataError, match=f"missing file {skeleton}: the modalities of a1_s3_t2 disagree"):
        load_dataset("utd-mhad", str(tmp_path / "utd"), 0, 0.1, {"cache": False})
    info = fx.write_ucf101(tmp_path / "ucf")
    (tmp_path / "ucf" / "tvl1_flow" / "v" / info["clips"][0] / "frame000003.jpg").unlink()
    with pytest.raises(DataError, match=f"flow modalities disagree.*{info['clips'][0]} has 3 frames"):
        load_dataset("ucf101", str(tmp_path / "ucf"), 0, 0.1, {**SMALL_IMAGES, "cache": False})
    fx.write_cmu_mosei(tmp_path / "mosei")
    path = tmp_path / "mosei" / "mosei_senti_data.pkl"
    data = pickle.loads(path.read_bytes())
    data["test"]["vision"] = data["test"]["vision"][:3]
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(DataError, match=f"{path}: the modalities of split 'test' disagree"):
        load_dataset("cmu-mosei", str(tmp_path / "mosei"), 0, 0.1, {})


def test_an_unknown_label_is_named(tmp_path):
    fx.write_crema_d(tmp_path / "crema")
    with (tmp_path / "crema" / "train.csv").open("ab") as file:
        file.write(b"1091_WSI_XYZ_XX,XYZ\r\n")
    with pytest.raises(DataError, match=f"unknown label 'XYZ' at {tmp_path / 'crema' / 'train.csv'}, line 7"):
        load_crema(tmp_path / "crema")
    fx.write_usc_had(tmp_path / "usc")
    shutil.copy(tmp_path / "usc" / "Subject1" / "a1t1.mat", tmp_path / "usc" / "Subject1" / "a13t1.mat")
    with pytest.raises(DataError, match=f"unknown label: activity 13 in {tmp_path / 'usc' / 'Subject1' / 'a13t1.mat'}"):
        load_dataset("usc-had", str(tmp_path / "usc"), 0, 0.1, {})


def test_an_empty_split_is_named(tmp_path):
    fx.write_crema_d(tmp_path / "crema")
    (tmp_path / "crema" / "test.csv").write_bytes(b"\r\n")
    with pytest.raises(DataError, match=f"test split is empty; {tmp_path / 'crema' / 'test.csv'} lists no recording"):
        load_crema(tmp_path / "crema")
    fx.write_usc_had(tmp_path / "usc")
    with pytest.raises(DataError, match="test split is empty.*Subject15"):
        load_dataset("usc-had", str(tmp_path / "usc"), 0, 0.1, {"test_subjects": [15]})


def test_a_clip_in_both_train_and_test_is_refused(tmp_path):
    info = fx.write_crema_d(tmp_path)
    with (tmp_path / "test.csv").open("ab") as file:
        file.write(f"{info['clips'][0]},NEU\r\n".encode())
    with pytest.raises(DataError, match=f"clip {info['clips'][0]} .* is listed twice"):
        load_crema(tmp_path)


def test_skip_bad_reports_how_many_were_skipped(tmp_path, capsys):
    info = fx.write_crema_d(tmp_path)
    (tmp_path / "AudioWAV" / f"{info['clips'][0]}.wav").write_bytes(b"RIFF....WAVEjunk")
    (tmp_path / "Image-01-FPS" / info["clips"][7]).rename(tmp_path / "elsewhere")
    with pytest.warns(UserWarning, match="skipped 2 bad sample"):
        splits = load_crema(tmp_path, skip_bad=True)
    assert len(splits.skipped) == 2 and len(splits.train) + len(splits.val) + len(splits.test) == 7
    assert any(info["clips"][0] in message for message in splits.skipped)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert (
            main(["data", "prepare", "crema-d", "--root", str(tmp_path), "--set", "image_size=32", "--skip-bad"]) == 0
        )
    assert "skipped 2 bad sample(s)" in capsys.readouterr().out
    with pytest.raises(DataError, match="built without 2 bad sample"):  # the cache never hides them silently
        load_dataset("crema-d", str(tmp_path), 0, 0.1, SMALL_IMAGES)


def test_every_sample_bad_is_one_clear_error_with_skip_bad(tmp_path):
    info = fx.write_crema_d(tmp_path)
    for clip in info["clips"]:
        (tmp_path / "AudioWAV" / f"{clip}.wav").write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(DataError, match="no recording of crema-d could be decoded; the first: cannot read WAV"):
        load_crema(tmp_path, skip_bad=True)


def test_prepare_refuses_a_dataset_without_files(tmp_path, capsys):
    assert main(["data", "prepare", "synthetic", "--root", str(tmp_path)]) == 2
    assert "no cache to prepare" in capsys.readouterr().err


def test_bad_option_values_are_refused(tmp_path):
    from erlmr.errors import ConfigError

    fx.write_crema_d(tmp_path)
    with pytest.raises(ConfigError, match="crema-d option frames must be a positive integer, got 0"):
        load_crema(tmp_path, frames=0)
    with pytest.raises(
        ConfigError,
        match=r"unknown key\(s\) \[.image_sise.\] in options of dataset .crema-d.; valid keys: frames, image_size",
    ):
        load_crema(tmp_path, image_sise=32)
