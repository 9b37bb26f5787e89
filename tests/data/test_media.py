"""Distributed videos (real .flv/.mp4/.avi made here with PyAV) read like the extracted frames, the audio
track like the WAV, the per-batch augmentation, and the AV-digits media demo end to end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

pytest.importorskip("av", reason="PyAV is not installed (pip install erlmr[media])")

import media_fixtures as mf  # noqa: E402

from erlmr.cli import main  # noqa: E402
from erlmr.data import load_dataset  # noqa: E402
from erlmr.data.augment import FrameAugment, crop_and_resize  # noqa: E402
from erlmr.data.media import image_pixels, normalized_stack, read_video_frames, read_wav  # noqa: E402
from erlmr.data.video import read_audio_track, write_video  # noqa: E402
from erlmr.errors import DataError, TrainingInterrupted  # noqa: E402
from erlmr.training import trainer  # noqa: E402
from erlmr.training.builders import make_loader  # noqa: E402

SMALL = {"image_size": 32, "cache": False, "workers": 1}
# dataset: (fixture writer, frame modality, the option choosing its source)
LAYOUTS = {
    "crema-d": (mf.write_crema_d, "visual", "visual_source"),  # .flv (FLV1 + MP3)
    "ave": (mf.write_ave, "visual", "visual_source"),  # .mp4 (H.264 + AAC), event seconds only
    "kinetics-sounds": (mf.write_kinetics_sounds, "visual", "visual_source"),  # .mp4 in class folders
    "vggsound": (mf.write_vggsound, "visual", "visual_source"),
    "ucf101": (mf.write_ucf101, "rgb", "rgb_source"),  # .avi (MPEG-4), every frame
}


def everything(split) -> dict[str, torch.Tensor]:
    return split.__getitems__(range(len(split)))[0]


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_videos_decode_to_the_frames_the_extraction_scripts_write(name, tmp_path):
    writer, modality, option = LAYOUTS[name]
    writer(tmp_path)
    extracted = load_dataset(name, str(tmp_path), 0, 0.1, {**SMALL, option: "frames"})
    decoded = load_dataset(name, str(tmp_path), 0, 0.1, {**SMALL, option: "video"})
    for split in ("train", "val", "test"):
        assert decoded.keys[split] == extracted.keys[split]
        difference = (
            everything(getattr(decoded, split))[modality] - everything(getattr(extracted, split))[modality]
        ).abs()
        assert difference.mean() < 0.05 and difference.max() < 0.4  # codec + JPEG loss, in ImageNet-normalised units


def test_frames_are_the_first_of_each_second_within_the_event(tmp_path):
    frames = mf.write_clip(tmp_path / "clip.flv", 0, 22050)

    def expected(numbers):  # the source frames, through the same resize
        return normalized_stack([image_pixels(Image.fromarray(frames[n]), 48) for n in numbers])

    def error(stack, numbers):
        return float(np.abs(stack.astype(np.float32) - expected(numbers)).mean())

    every_second = read_video_frames(tmp_path / "clip.flv", 3, 48, fps=1)  # kept: frames 0, 10, 20 (and 30 absent)
    assert error(every_second, [0, 10, 20]) < 0.05
    assert error(every_second, [1, 11, 21]) > 0.2  # a neighbouring frame is far off: the test can tell
    event = read_video_frames(tmp_path / "clip.flv", 2, 48, fps=1, seconds=(1, 2))
    assert error(event, [10, 20]) < 0.05
    twice = read_video_frames(tmp_path / "clip.flv", 6, 48, fps=2)  # two per second, evenly: 0, 5, 10, ...
    assert error(twice, [0, 5, 10, 15, 20, 25]) < 0.05


def test_audio_from_the_video_track_equals_the_wav(tmp_path):
    mf.write_crema_d(tmp_path, audio_codec="pcm_s16le")  # FLV with PCM audio: no codec loss
    wav = load_dataset("crema-d", str(tmp_path), 0, 0.1, {**SMALL, "audio_source": "wav"})
    track = load_dataset("crema-d", str(tmp_path), 0, 0.1, {**SMALL, "audio_source": "video"})
    for split in ("train", "test"):
        torch.testing.assert_close(everything(getattr(track, split))["audio"], everything(getattr(wav, split))["audio"])
    from erlmr.data.kinetics_sounds import ks_fbank

    clip = wav.keys["train"][0]
    fbank = ks_fbank(tmp_path / "VideoFlash" / f"{clip}.flv")
    assert fbank.shape == (1, 1024, 128)
    np.testing.assert_allclose(fbank, ks_fbank(tmp_path / "AudioWAV" / f"{clip}.wav"), atol=1e-5)


@pytest.mark.parametrize("suffix, rate", [(".flv", 22050), (".mp4", 16000)])  # MP3 in FLV, AAC in MP4
def test_lossy_audio_tracks_decode_to_the_signal_within_codec_tolerance(tmp_path, suffix, rate):
    mf.write_clip(tmp_path / f"clip{suffix}", 0, rate, wav=tmp_path / "clip.wav")
    track, track_rate = read_audio_track(tmp_path / f"clip{suffix}")
    signal, _ = read_wav(tmp_path / "clip.wav")
    assert track_rate == rate
    # The encoder's priming delay (about 1 k samples) leads the track; compare after it.
    n = len(signal) - 2048
    delay = int(np.argmax([np.dot(track[k : k + n], signal[:n]) for k in range(2048)]))
    assert delay < 1200
    assert np.abs(track[delay : delay + n] - signal[:n]).mean() < 0.1 * np.abs(signal).mean()


def test_kaldi_fbank_matches_kaldi():
    knf = pytest.importorskip("kaldi_native_fbank")
    from erlmr.data.kinetics_sounds import kaldi_fbank

    rate = 32000  # at 16 kHz Kaldi refuses 128 bins (the lowest are empty); compare where it accepts them
    samples = mf.tone(3, rate).astype(np.float32) / 32768
    options = knf.FbankOptions()
    options.frame_opts.dither, options.frame_opts.window_type, options.frame_opts.samp_freq = 0.0, "hanning", rate
    options.mel_opts.num_bins = 128
    reference = knf.OnlineFbank(options)
    reference.accept_waveform(rate, samples.tolist())
    reference.input_finished()
    expected = np.stack([reference.get_frame(i) for i in range(reference.num_frames_ready)])
    np.testing.assert_allclose(kaldi_fbank(samples, rate).numpy(), expected, atol=2e-3)


def test_a_corrupt_video_is_named_or_skipped(tmp_path):
    clips = mf.write_crema_d(tmp_path)
    broken = tmp_path / "VideoFlash" / f"{clips[1]}.flv"
    broken.write_bytes(b"FLV\x01" + bytes(range(256)) * 8)
    with pytest.raises(DataError, match=f"cannot decode video file {broken}.*skip_bad=true"):
        load_dataset("crema-d", str(tmp_path), 0, 0.1, {**SMALL, "visual_source": "video"})
    with pytest.warns(UserWarning, match="skipped 1 bad sample"):
        splits = load_dataset("crema-d", str(tmp_path), 0, 0.1, {**SMALL, "visual_source": "video", "skip_bad": True})
    assert len(splits.skipped) == 1 and str(broken) in splits.skipped[0]
    silent = tmp_path / "silent.avi"
    write_video(silent, mf.smooth_frames(0), mf.FPS)
    with pytest.raises(DataError, match=f"{silent} has no audio track"):
        read_audio_track(silent)


def test_missing_pyav_names_the_extra(tmp_path, monkeypatch):
    mf.write_crema_d(tmp_path)
    monkeypatch.setitem(sys.modules, "av", None)  # import av now raises ImportError
    with pytest.raises(DataError, match=r"needs PyAV.*pip install erlmr\[media\]"):
        load_dataset("crema-d", str(tmp_path), 0, 0.1, {**SMALL, "visual_source": "video"})


def test_two_processes_decode_what_one_does(tmp_path):
    mf.write_crema_d(tmp_path)
    options = {**SMALL, "visual_source": "video", "audio_source": "video"}
    one = load_dataset("crema-d", str(tmp_path), 0, 0.1, options)
    two = load_dataset("crema-d", str(tmp_path), 0, 0.1, {**options, "workers": 2})
    for m in ("audio", "visual"):
        assert torch.equal(one.train.inputs[m], two.train.inputs[m])


# ------------------------------------------------------------------------------------- augmentation


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "visual": torch.randn(6, 3, 2, 24, 24, generator=generator),
        "audio": torch.randn(6, 1, 8, 8, generator=generator),
    }


def test_augmentation_is_deterministic_per_seed_and_changes_with_epoch_and_step():
    augment, inputs = FrameAugment(("visual",)), batch()
    first = augment(inputs, 0, 3, 5)["visual"]
    assert torch.equal(first, augment(inputs, 0, 3, 5)["visual"])  # a resumed step redraws the same crops
    for other in [(1, 3, 5), (0, 4, 5), (0, 3, 6)]:
        assert not torch.allclose(first, augment(inputs, *other)["visual"])
    assert torch.equal(augment(inputs, 0, 3, 5)["audio"], inputs["audio"])  # other modalities pass through
    assert first.shape == inputs["visual"].shape
    frames = (
        first[:, :, 0] - first[:, :, 1]
    )  # a clip's frames get their own crops, as the references' per-image transform
    assert not torch.allclose(frames, inputs["visual"][:, :, 0] - inputs["visual"][:, :, 1])


def test_crop_and_resize_is_crop_then_bilinear_resize_and_mirrors():
    images = torch.randn(3, 2, 16, 16)
    whole = torch.tensor([[0, 0, 16, 16]] * 3, dtype=torch.float64)
    no, yes = torch.zeros(3, dtype=torch.bool), torch.ones(3, dtype=torch.bool)
    torch.testing.assert_close(crop_and_resize(images, whole, no), images)
    torch.testing.assert_close(crop_and_resize(images, whole, yes), images.flip(-1))
    box = torch.tensor([[4, 2, 8, 10]] * 3, dtype=torch.float64)  # top, left, h, w
    expected = F.interpolate(images[:, :, 4:12, 2:12], size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(crop_and_resize(images, box, no), expected)
    torch.testing.assert_close(crop_and_resize(images, box, yes), expected.flip(-1))


def test_crops_follow_random_resized_crop_and_half_the_images_are_flipped():
    augment = FrameAugment(("visual",))
    boxes = augment.crop_boxes(20000, 224, 224, torch.Generator().manual_seed(0))
    top, left, h, w = boxes.T
    area, aspect = h * w / 224**2, w / h
    assert area.min() >= 0.075 and area.max() <= 1 and aspect.min() >= 0.74 and aspect.max() <= 1.35
    assert top.min() >= 0 and left.min() >= 0 and (top + h).max() <= 224 and (left + w).max() <= 224
    assert 0.45 < area.mean() < 0.62  # E[U(0.08, 1)] = 0.54, less the rejected draws
    flip_only = FrameAugment(("visual",), resized_crop=False)
    x = batch()["visual"]
    out = flip_only({"visual": x}, 1, 0, 0)["visual"]
    pairs = list(zip(out.transpose(1, 2).flatten(0, 1), x.transpose(1, 2).flatten(0, 1)))  # every image of every clip
    mirrored = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in pairs])
    kept = torch.tensor([torch.equal(o, i) for o, i in pairs])
    assert torch.all(mirrored | kept) and mirrored.any() and kept.any()


def train_config(root, run_dir, augment=True, epochs=2) -> dict:
    return {
        "data": {"dataset": "crema-d", "root": str(root), "options": {**SMALL, "augment": augment}},
        "model": {"encoder_options": {"audio": {"width": 8}, "visual": {"width": 8}}},
        "train": {"epochs": epochs, "batch_size": 2, "quiet": True, "device": "cpu", "run_dir": str(run_dir)},
    }


def epoch_lines(run_dir) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if not k.endswith("time_s")} for line in lines]


def test_training_augments_every_step_and_evaluation_never(tmp_path):
    mf.write_crema_d(tmp_path / "data")
    run = trainer.Trainer(train_config(tmp_path / "data", tmp_path / "on"))
    calls = []
    augment = run.splits.augment

    def counted(inputs, seed, epoch, step):
        calls.append((epoch, step))
        return augment(inputs, seed, epoch, step)

    run.splits.augment = counted
    run.run()
    steps = len(make_loader(run.splits.train, 2, True, 0, 0, False))
    assert calls == [(e, s) for e in range(2) for s in range(steps)]  # once per training step; none in evaluation
    plain = trainer.train(train_config(tmp_path / "data", tmp_path / "off", augment=False))
    assert epoch_lines(tmp_path / "on")[0]["train_loss"] != epoch_lines(plain.run_dir)[0]["train_loss"]


def test_an_augmented_run_is_deterministic_and_resumes_exactly(tmp_path, monkeypatch):
    mf.write_crema_d(tmp_path / "data")
    full = trainer.train(train_config(tmp_path / "data", tmp_path / "full"))
    assert epoch_lines(trainer.train(train_config(tmp_path / "data", tmp_path / "again")).run_dir) == epoch_lines(
        full.run_dir
    )
    check, steps = trainer.Trainer.gradients_finite, iter(range(1, 100))

    def interrupt(self):  # SIGTERM in the 6th step: epoch 2, step 2 (4 steps per epoch)
        if next(steps) == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return check(self)

    monkeypatch.setattr(trainer.Trainer, "gradients_finite", interrupt)
    with pytest.raises(TrainingInterrupted, match="epoch 2, step 2"):
        trainer.train(train_config(tmp_path / "data", tmp_path / "stopped"))
    monkeypatch.undo()
    resumed = trainer.resume(tmp_path / "stopped")
    assert epoch_lines(resumed.run_dir) == epoch_lines(full.run_dir)


# ---------------------------------------------------------------------------------------- the demo


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_avdigits_media_is_read_as_crema_d_and_trains_a_resnet18(tmp_path, capsys):
    import av

    out = tmp_path / "avdigits-media"
    assert main(["data", "avdigits-media", "--out", str(out), "--clips", "20"]) == 0
    train = (out / "train.csv").read_text().splitlines()
    test = (out / "test.csv").read_text().splitlines()
    assert len(train) + len(test) == 20 and len(list((out / "VideoFlash").glob("*.flv"))) == 20
    clip, label = train[0].split(",")
    assert clip.split("_")[2] == label and label in ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
    with av.open(str(out / "VideoFlash" / f"{clip}.flv")) as container:
        assert container.streams.video[0].codec_context.name == "flv"
        assert container.streams.audio[0].codec_context.name.startswith("mp3")
    shutil.rmtree(out / "AudioWAV")  # the audio comes from the videos' track then
    assert main(["data", "prepare", "crema-d", "--root", str(out), "--set", "image_size=32", "--workers", "2"]) == 0
    assert "14 train / 6 test samples" in capsys.readouterr().out
    argv = [
        "train",
        "--dataset",
        "crema-d",
        "--data",
        str(out),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--quiet",
        "--run-dir",
        str(tmp_path / "run"),
    ]
    for item in [
        "data.options.image_size=32",
        "model.encoders.audio=resnet18",
        "model.encoders.visual=resnet18",
        "model.encoder_options.audio.width=8",
        "model.encoder_options.visual.width=8",
    ]:
        argv += ["--set", item]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(argv) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["data_options"]["image_size"] == 32 and 0 <= summary["test"]["accuracy"] <= 1
