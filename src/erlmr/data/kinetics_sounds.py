"""Kinetics-Sounds: the 31-class audio-visual subset of Kinetics used by OGM-GE and its successors.

Arandjelović & Zisserman, "Look, Listen and Learn", ICCV 2017 (the Kinetics-Sounds idea); the 31-class
lists of OGM-GE (Peng et al., CVPR 2022, github.com/GeWu-Lab/OGM-GE_CVPR2022, ``data/KineticSound/
my_train.txt`` / ``my_test.txt``: ``clip,10,label`` rows, 14799 / 2597 clips, labels 0..30 without
published names). Audio is the Kaldi filter bank OGM-GE's ``process_audio.py`` saves per clip as a
(1024, 128) ``.npy``; frames are extracted at 1 fps as ``frame_00001.jpg``, ... as in BalanceBenchmark
(github.com/GeWu-Lab/BalanceBenchmark). Without those folders, both come from the downloaded Kinetics
clips ``<clip>.mp4`` (anywhere under ``video_dir``): frames sampled at 1 fps (:mod:`erlmr.data.video`)
and the filter bank computed here from the audio track as ``process_audio.py`` computes it
(:func:`ks_fbank`).

Samples: audio (1, 1024, 128); visual ``frames`` frames spread over the clip → (3, frames, S, S); at
training, BalanceBenchmark's random resized crop and horizontal flip (``augment``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import DataError
from .augment import FrameAugment
from .base import DATASETS
from .media import (
    choose_source,
    class_index,
    read_audio,
    read_frames,
    read_lines,
    read_video_frames,
    require_file,
    resample,
)
from .store import Recipe, Record, RecordedSplits, dataset_root, load_recipe, require_positive
from .video import index_videos

CLASSES = [str(c) for c in range(31)]
FBANK_SHAPE = (1024, 128)
# process_audio.py's normalisation (the AudioSet statistics of the AST recipe): (fbank - mean) / (2 std).
FBANK_MEAN, FBANK_STD = -4.503877, 5.141276
# The lists do not say at which rate the WAVs were; 16 kHz is the rate of the Kaldi/AST recipe it follows.
FBANK_RATE = 16000


def read_fbank(path) -> np.ndarray:
    require_file(path, "audio filter bank")
    try:
        fbank = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"cannot read {path}: {error}") from None
    if fbank.shape != FBANK_SHAPE:
        raise DataError(f"{path} holds an array of shape {fbank.shape}; expected the {FBANK_SHAPE} filter bank")
    return fbank.astype(np.float32)[None]


def kaldi_mel_banks(bins: int, n_fft: int, rate: int, low: float, high: float) -> torch.Tensor:
    """Kaldi's triangular filters, equal-spaced on the mel scale 1127 ln(1 + f / 700), shape
    (bins, n_fft // 2 + 1); the Nyquist bin gets no weight, as in Kaldi."""

    def mel(f):
        return 1127.0 * torch.log1p(torch.as_tensor(f, dtype=torch.float64) / 700.0)

    delta = (mel(high) - mel(low)) / (bins + 1)
    left = mel(low) + delta * torch.arange(bins, dtype=torch.float64)[:, None]
    frequencies = mel(rate / n_fft * torch.arange(n_fft // 2, dtype=torch.float64))[None, :]
    rising, falling = (frequencies - left) / delta, (left + 2 * delta - frequencies) / delta
    banks = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return torch.cat([banks, torch.zeros(bins, 1, dtype=torch.float64)], dim=1)


def kaldi_fbank(samples: np.ndarray, rate: int, bins: int = 128, low: float = 20.0) -> torch.Tensor:
    """Log mel filter bank energies (frames, bins) as Kaldi's ``compute-fbank-feats`` (and
    ``torchaudio.compliance.kaldi.fbank``) computes them with a Hanning window, no dither and otherwise
    the defaults: 25 ms frames every 10 ms (edges snipped), DC offset removed, pre-emphasis 0.97,
    power spectrum on a power-of-two FFT, floor at float32 epsilon."""
    window, shift = int(rate * 0.025), int(rate * 0.010)
    n_fft = 2 ** math.ceil(math.log2(window))
    signal = torch.from_numpy(np.asarray(samples, dtype=np.float64))
    if len(signal) < window:
        raise DataError(f"{len(signal)} audio samples are too few for one {window}-sample filter bank frame")
    frames = signal.unfold(0, window, shift)
    frames = frames - frames.mean(dim=1, keepdim=True)
    frames = frames - 0.97 * torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames * torch.hann_window(window, periodic=False, dtype=torch.float64)
    power = torch.fft.rfft(frames, n=n_fft).abs() ** 2
    energies = power @ kaldi_mel_banks(bins, n_fft, rate, low, rate / 2).T
    return torch.log(torch.clamp(energies, min=float(torch.finfo(torch.float32).eps)))


def ks_fbank(path) -> np.ndarray:
    """The (1, 1024, 128) filter bank of ``path`` (a video's audio track, or a WAV) as ``process_audio.py``
    makes it: mean removed, Kaldi fbank, zero-padded or cut to 1024 frames, then normalised."""
    samples, rate = read_audio(path)
    samples = resample(samples, rate, FBANK_RATE)
    fbank = kaldi_fbank(samples - samples.mean(), FBANK_RATE)
    fbank = torch.nn.functional.pad(fbank, (0, 0, 0, max(0, FBANK_SHAPE[0] - len(fbank))))[: FBANK_SHAPE[0]]
    return ((fbank - FBANK_MEAN) / (2 * FBANK_STD)).numpy().astype(np.float32)[None]


def read_list(path, split: str) -> list[tuple[str, int]]:
    """(clip, label) for every ``clip,10,label`` row of an OGM-GE list."""
    rows = []
    for number, line in read_lines(path, f"the Kinetics-Sounds {split} list"):
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 3:
            raise DataError(f"{path}, line {number}: expected 'clip,10,label', got {line!r}")
        rows.append((fields[0], class_index(CLASSES, fields[2], f"{path}, line {number}")))
    return rows


@DATASETS.register("kinetics-sounds", "Kinetics-Sounds: audio filter bank + frames, 31 classes (OGM-GE lists)")
def load_kinetics_sounds(
    root: str | None,
    seed: int = 0,
    val_fraction: float = 0.1,
    frames: int = 3,
    image_size: int = 224,
    audio_dir: str = "audio",
    visual_dir: str = "visual",
    video_dir: str = "videos",
    visual_source: str = "auto",
    audio_source: str = "auto",
    augment: bool = True,
    cache: bool = True,
    cache_dir: str | None = None,
    skip_bad: bool = False,
    workers: int | None = None,
) -> RecordedSplits:
    """``visual_source``: ``frames`` (``visual_dir``), ``video`` (``video_dir``) or ``auto`` (frames when
    that folder exists); ``audio_source``: ``fbank`` (``audio_dir``), ``video`` or ``auto``."""
    require_positive("kinetics-sounds", frames=frames, image_size=image_size)
    folder = dataset_root(root, "kinetics-sounds")
    audio_root, frames_root, videos_root = folder / audio_dir, folder / visual_dir, folder / video_dir
    visual = choose_source("kinetics-sounds", visual_source, "visual", {"frames": frames_root, "video": videos_root})
    audio = choose_source("kinetics-sounds", audio_source, "audio", {"fbank": audio_root, "video": videos_root})
    videos = index_videos(videos_root) if "video" in (audio, visual) else {}

    def video_file(clip: str):
        return videos.get(clip, videos_root / f"{clip}.mp4")

    lists = {"train": folder / "my_train.txt", "test": folder / "my_test.txt"}
    records = []
    for split, path in lists.items():
        for clip, label in read_list(path, split):
            shown = [
                audio_root / f"{clip}.npy" if audio == "fbank" else video_file(clip),
                frames_root / clip if visual == "frames" else video_file(clip),
            ]
            records.append(
                Record(clip, label, split, clip, f"clip {clip} ({', '.join(map(str, dict.fromkeys(shown)))})")
            )

    def decode(record: Record) -> dict:
        clip = record.key
        sound = read_fbank(audio_root / f"{clip}.npy") if audio == "fbank" else ks_fbank(video_file(clip))
        if visual == "frames":
            return {"audio": sound[None], "visual": read_frames(frames_root / clip, frames, image_size)[None]}
        return {"audio": sound[None], "visual": read_video_frames(video_file(clip), frames, image_size, fps=1)[None]}

    recipe = Recipe(
        name="kinetics-sounds",
        modalities=["audio", "visual"],
        classes=CLASSES,
        records=records,
        decode=decode,
        settings={
            "frames": frames,
            "image_size": image_size,
            "audio_dir": audio_dir,
            "visual_dir": visual_dir,
            "sources": {"audio": audio, "visual": visual},
            "fbank_rate": FBANK_RATE,
        },
        sources={split: str(path) for split, path in lists.items()},
        default_encoders={"audio": "resnet18", "visual": "resnet18"},
        workers=workers,
        augment=FrameAugment(("visual",)) if augment else None,
    )
    return load_recipe(recipe, folder, seed, val_fraction, cache, cache_dir, skip_bad)
