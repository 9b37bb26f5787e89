"""The encoders the field's datasets use, and the audio/image readers behind the loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from erlmr.data.media import SpectrogramRecipe, pick_evenly, read_wav, resample
from erlmr.encoders import ENCODERS, build_encoder
from erlmr.errors import ConfigError


def test_resnet18_is_the_standard_architecture():
    encoder = build_encoder("resnet18", (3, 64, 64), {})
    # torchvision's resnet18 has 11,689,512 parameters, of which the 1000-way classifier holds 513,000.
    assert sum(p.numel() for p in encoder.parameters()) == 11_176_512
    assert encoder.output_shape == (512, 4)
    spectrogram = build_encoder("resnet18", (1, 257, 188), {"width": 8, "grid": 3})
    out = spectrogram(torch.randn(2, 1, 257, 188))
    assert out.shape == (2, 64, 9) and spectrogram.output_shape == (64, 9)
    out.sum().backward()
    assert spectrogram.trunk[0].weight.grad.abs().sum() > 0


def test_resnet18_averages_frames_over_time_after_the_trunk():
    frames = build_encoder("resnet18", (3, 2, 32, 32), {"width": 8}).eval()
    single = build_encoder("resnet18", (3, 32, 32), {"width": 8}).eval()
    single.load_state_dict(frames.state_dict())
    clip = torch.randn(2, 3, 2, 32, 32)
    expected = single.pool((single.trunk(clip[:, :, 0]) + single.trunk(clip[:, :, 1])) / 2).flatten(2)
    assert torch.allclose(frames(clip), expected, atol=1e-5)
    still = clip[:, :, :1].expand(-1, -1, 2, -1, -1)
    assert torch.allclose(frames(still), single(clip[:, :, 0]), atol=1e-5)
    time_first = build_encoder("resnet18", (2, 3, 32, 32), {"width": 8, "layout": "FCHW"}).eval()
    time_first.load_state_dict(frames.state_dict())
    assert torch.allclose(time_first(clip.transpose(1, 2)), frames(clip), atol=1e-5)
    with pytest.raises(ConfigError, match="layout"):
        build_encoder("resnet18", (3, 2, 32, 32), {"layout": "TCHW"})


def test_sensor_cnn_matches_the_erl_mr_usc_had_encoder():
    encoder = build_encoder("sensor_cnn", (3, 200), {})
    assert encoder.output_shape == (16, 198) and 16 * 198 == 3168
    convs = [m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 64, (2, 2)),
        (64, 64, (2, 2)),
        (64, 32, (1, 1)),
        (32, 16, (1, 1)),
    ]
    assert [m.p for m in encoder.modules() if isinstance(m, torch.nn.Dropout)] == [0.5, 0.5, 0.5]
    assert encoder(torch.randn(4, 3, 200)).shape == (4, 16, 198)
    inertial = build_encoder("sensor_cnn", (6, 128), {})
    assert inertial(torch.randn(2, 6, 128)).shape == (2, 16, 4 * 126) == (2, *inertial.output_shape)
    with pytest.raises(ConfigError, match=r"\(C, T\)"):
        build_encoder("sensor_cnn", (200,), {})


def test_skeleton_encoder_mixes_all_joints():
    torch.manual_seed(0)
    encoder = build_encoder("skeleton", (20, 3, 64), {"channels": 16}).eval()
    assert encoder.joints[0].in_channels == 20  # joints are the channels of the co-occurrence layers
    joints = torch.randn(2, 20, 3, 64, requires_grad=True)
    out = encoder(joints)
    assert out.shape == (2, 16, 4) and encoder.output_shape == (16, 4)
    out.sum().backward()
    assert (joints.grad.abs().sum(dim=(0, 2, 3)) > 0).all()


def test_transformer_encodes_feature_sequences():
    encoder = build_encoder("transformer", (74, 50), {"d_model": 16, "heads": 2})
    out = encoder(torch.randn(3, 74, 50))
    assert out.shape == (3, 16, 4) and encoder.output_shape == (16, 4)
    with pytest.raises(ConfigError, match="divisible"):
        build_encoder("transformer", (74, 50), {"d_model": 10, "heads": 4})
    assert "transformer" in ENCODERS


def test_log_spectrogram_peaks_at_the_tone(tmp_path):
    rate = 22050
    tone = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(rate) / rate)
    wavfile.write(tmp_path / "tone.wav", rate, (tone * 32767).astype(np.int16))
    recipe = SpectrogramRecipe(sample_rate=rate, seconds=3.0, n_fft=512, hop_length=353)
    spectrogram = recipe(tmp_path / "tone.wav")
    assert spectrogram.shape == recipe.shape() == (1, 257, 188)
    assert np.bincount(spectrogram[0].argmax(axis=0)).argmax() == round(1000 * 512 / rate)
    pmr = SpectrogramRecipe(16000, 10.0, 512, 159, center=False, standardize=True)
    standardized = pmr(tmp_path / "tone.wav", segment=(0.2, 0.6))
    assert standardized.shape == pmr.shape() == (1, 257, 1004)
    assert abs(standardized.mean()) < 1e-4 and abs(standardized.std() - 1) < 1e-3


def test_wav_reading_downmixes_rescales_and_resamples(tmp_path):
    stereo = np.stack([np.full(800, 16384), np.full(800, -16384)], axis=1).astype(np.int16)
    wavfile.write(tmp_path / "stereo.wav", 8000, stereo)
    samples, rate = read_wav(tmp_path / "stereo.wav")
    assert rate == 8000 and samples.shape == (800,) and np.allclose(samples, 0)
    wavfile.write(tmp_path / "u8.wav", 8000, np.full(800, 192, dtype=np.uint8))
    assert np.allclose(read_wav(tmp_path / "u8.wav")[0], 0.5)
    assert len(resample(np.ones(800, dtype=np.float32), 8000, 22050)) == 2205
    assert pick_evenly(10, 3) == [1, 5, 8] and pick_evenly(2, 3) == [0, 1, 1]
