"""AV-digits: build integrity, determinism, the missing-espeak message, log-mel, and the noise options."""

from __future__ import annotations

import json
import math
import shutil
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from erlmr.data.avdigits import (
    CLASSES,
    _synthesise_clip,
    build_avdigits,
    default_avdigits_dir,
    ensure_avdigits,
    load_avdigits,
    log_mel,
)
from erlmr.data.base import DATASETS, load_dataset
from erlmr.errors import DataError

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)"
)
BUILT_CLIPS = 300  # the clips of the session's ``built`` fixture (conftest.py)


def read_split(folder, split_name):
    with np.load(folder / f"{split_name}.npz") as npz:
        return dict(npz)


def read_meta(folder):
    return json.loads((folder / "meta.json").read_text())


@needs_espeak
def test_folder_holds_finished_arrays_only(built):
    assert sorted(p.name for p in built.parent.iterdir()) == ["set"]  # no partial or old folders left behind
    meta = read_meta(built)
    assert meta["modalities"] == ["audio", "visual"] and meta["classes"] == CLASSES
    assert (meta["clips"], meta["seed"], meta["sample_rate"]) == (BUILT_CLIPS, 0, 16000)
    train, test = read_split(built, "train"), read_split(built, "test")
    assert len(train["label"]) + len(test["label"]) == BUILT_CLIPS
    for split in (train, test):
        assert split["audio"].dtype == np.int16 and split["audio"].shape[1] == 16000
        assert split["visual"].dtype == np.float32 and split["visual"].shape[1:] == (8, 8)
        assert split["label"].dtype == np.int64
        assert np.all(np.abs(split["audio"]).max(axis=1) > 1000)  # every clip has speech in it


@needs_espeak
def test_images_match_labels(built):
    digits = load_digits()
    for split_name in ("train", "test"):
        split = read_split(built, split_name)
        np.testing.assert_array_equal(digits.target[split["image_id"]], split["label"])
        np.testing.assert_allclose(split["visual"], digits.images[split["image_id"]] / 16.0, atol=1e-6)


@needs_espeak
def test_audio_is_the_labelled_word(built):
    # Re-synthesising a clip from its stored parameters and label must give the stored waveform.
    meta = read_meta(built)
    for split_name in ("train", "test"):
        split = read_split(built, split_name)
        for i in range(0, len(split["label"]), 37):
            job = (
                CLASSES[split["label"][i]],
                meta["speakers"][split["speaker"][i]],
                int(split["pitch"][i]),
                int(split["speed"][i]),
                int(split["amplitude"][i]),
            )
            np.testing.assert_array_equal(_synthesise_clip(job), split["audio"][i])


@needs_espeak
def test_speakers_and_images_do_not_cross_splits(built):
    meta = read_meta(built)
    train, test = read_split(built, "train"), read_split(built, "test")
    assert not set(meta["train_speakers"]) & set(meta["test_speakers"])
    assert {meta["speakers"][i] for i in train["speaker"]} <= set(meta["train_speakers"])
    assert {meta["speakers"][i] for i in test["speaker"]} <= set(meta["test_speakers"])
    assert not set(train["image_id"]) & set(test["image_id"])


@needs_espeak
def test_same_seed_gives_identical_arrays(tmp_path):
    first = build_avdigits(tmp_path / "first", clips=60, seed=3, progress=False)
    second = build_avdigits(tmp_path / "second", clips=60, seed=3, workers=1, progress=False)
    other = build_avdigits(tmp_path / "other", clips=60, seed=4, progress=False)
    for split_name in ("train", "test"):
        a, b = read_split(first, split_name), read_split(second, split_name)
        assert a.keys() == b.keys()
        for name in a:
            assert a[name].dtype == b[name].dtype and a[name].tobytes() == b[name].tobytes(), name
        assert not np.array_equal(a["audio"], read_split(other, split_name)["audio"])
    assert read_meta(first) == read_meta(second)


@needs_espeak
def test_rebuild_replaces_the_folder(tmp_path):
    out = build_avdigits(tmp_path / "set", clips=40, seed=0, progress=False)
    build_avdigits(out, clips=50, seed=0, progress=False)
    assert read_meta(out)["clips"] == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


@needs_espeak
def test_build_refuses_to_replace_other_folders_and_tiny_sets(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match="not an AV-digits folder"):
        build_avdigits(tmp_path, clips=40, progress=False)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    with pytest.raises(DataError, match="one per digit"):
        build_avdigits(tmp_path / "set", clips=25, progress=False)


def test_missing_espeak_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DataError, match="apt-get install espeak-ng") as error:
        build_avdigits(tmp_path / "set", clips=20, progress=False)
    assert "brew install espeak-ng" in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "set").exists()


def test_default_dir_follows_erlmr_data(tmp_path, monkeypatch):
    monkeypatch.setenv("ERLMR_DATA", str(tmp_path))
    assert default_avdigits_dir(500, 7) == tmp_path / "avdigits-500-7"


@needs_espeak
def test_ensure_reuses_a_build_and_rejects_a_different_one(built):
    assert ensure_avdigits(built, clips=BUILT_CLIPS, seed=0) == built
    with pytest.raises(DataError, match="clips=300, seed=0"):
        ensure_avdigits(built, clips=BUILT_CLIPS, seed=1)


def test_log_mel_shape():
    assert log_mel(torch.randn(3, 16000)).shape == (3, 1, 40, 101)
    assert log_mel(torch.randn(2, 8000), n_mels=64, hop=80).shape == (2, 1, 64, 101)


def tone(hz: float, amplitude: float) -> torch.Tensor:
    return amplitude * torch.sin(2 * math.pi * hz * torch.arange(16000) / 16000).unsqueeze(0)


def htk_mel(hz: float) -> float:
    return 2595 * math.log10(1 + hz / 700)


def test_log_mel_puts_a_tone_in_its_band():
    band_width = htk_mel(8000) / 41  # 40 triangular filters span 42 equally spaced mel points
    for hz in (300.0, 1000.0, 3000.0):
        quiet = log_mel(tone(hz, 0.05))[0, 0].mean(dim=1)
        loud = log_mel(tone(hz, 0.5))[0, 0].mean(dim=1)
        band = int(loud.argmax())
        assert abs(band_width * (band + 1) - htk_mel(hz)) < band_width  # that band's centre is near hz
        assert loud[band] - quiet[band] == pytest.approx(math.log(100), abs=0.05)  # 10x amplitude = 100x power


@needs_espeak
def test_load_shapes_splits_and_registration(built):
    splits = load_dataset("avdigits", str(built), 0, 0.1, {"clips": BUILT_CLIPS})
    assert "avdigits" in DATASETS and splits.name == "avdigits"
    assert splits.modalities == ["audio", "visual"] and splits.classes == CLASSES
    assert splits.default_encoders == {"audio": "cnn1d", "visual": "cnn2d"}
    assert splits.input_shapes() == {"audio": (40, 101), "visual": (1, 8, 8)}
    n_train = len(read_split(built, "train")["label"])
    assert len(splits.train) + len(splits.val) == n_train
    assert len(splits.val) == pytest.approx(0.1 * n_train, abs=10)
    assert len(splits.test) == BUILT_CLIPS - n_train
    for split in (splits.train, splits.val, splits.test):
        assert all(x.dtype == torch.float32 for x in split.inputs.values())
    audio = splits.train.inputs["audio"]
    assert audio.mean(dim=(0, 2)).abs().max() < 0.2  # standardised per mel band with train statistics


@needs_espeak
def test_load_noise_is_seeded(built):
    first, again, other = (load_avdigits(root=str(built), seed=s, clips=BUILT_CLIPS) for s in (1, 1, 2))
    for modality in ("audio", "visual"):
        assert torch.equal(first.test.inputs[modality], again.test.inputs[modality])
        assert not torch.equal(first.test.inputs[modality], other.test.inputs[modality])
    clean = load_avdigits(root=str(built), clips=BUILT_CLIPS, audio_snr_db=None, image_sigma=0.0)
    test_images = torch.from_numpy(read_split(built, "test")["visual"]).unsqueeze(1)
    assert torch.equal(clean.test.inputs["visual"], test_images)


def unimodal_accuracy(splits, modality: str) -> float:
    """Test accuracy of logistic regression on flattened, standardised features of one modality."""
    scaler = StandardScaler().fit(splits.train.inputs[modality].flatten(1).numpy())
    features = {
        name: scaler.transform(getattr(splits, name).inputs[modality].flatten(1).numpy()) for name in ("train", "test")
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(C=0.1, max_iter=300).fit(features["train"], splits.train.labels.numpy())
    return model.score(features["test"], splits.test.labels.numpy())


@needs_espeak
def test_noise_options_make_their_modality_harder(built):
    easy = load_avdigits(root=str(built), clips=BUILT_CLIPS, audio_snr_db=20.0, image_sigma=0.0)
    hard = load_avdigits(root=str(built), clips=BUILT_CLIPS, audio_snr_db=-25.0, image_sigma=10.0)
    assert unimodal_accuracy(easy, "audio") > unimodal_accuracy(hard, "audio") + 0.2
    assert unimodal_accuracy(easy, "visual") > unimodal_accuracy(hard, "visual") + 0.2
