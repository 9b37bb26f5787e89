"""Reading the files real datasets ship: text lists, WAV audio, JPEG frames, videos (through
:mod:`erlmr.data.video`) and MATLAB ``.mat`` arrays.

Every reader raises :class:`~erlmr.errors.DataError` naming the file when it is missing or unreadable,
so a loader never fails with a deep decoder traceback. The decoders (scipy, Pillow) raise many exception
types on a damaged file (IndexError, struct.error, SyntaxError, ...), so each library call is guarded
with ``except Exception``; nothing else runs inside those guards.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..extras import require
from .video import VIDEO_SUFFIXES, read_audio_track, sample_frames

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)
IMAGE_SUFFIXES = (".jpg", ".jpeg")


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"missing folder {path} ({what})")
    return path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"missing file {path} ({what})")
    return path


def read_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """Non-empty lines of a text list as (1-based line number, text); a BOM and CRLF endings are fine."""
    require_file(path, what)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {path} ({what}): {error}") from None
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def class_index(classes: Sequence[str], label: str, where: str) -> int:
    try:
        return list(classes).index(label)
    except ValueError:
        shown = ", ".join(classes[:8]) + (", ..." if len(classes) > 8 else "")
        raise DataError(f"unknown label {label!r} at {where}; valid labels: {shown}") from None


def pick_evenly(count: int, k: int) -> list[int]:
    """``k`` indices into ``count`` items, one from the middle of each of ``k`` equal segments."""
    return [min(count - 1, int((i + 0.5) * count / k)) for i in range(k)]


def find_dir(root: Path, candidates: Sequence[str], what: str) -> Path:
    """The first of ``root/candidate`` that is a folder; the error lists every place looked at."""
    for candidate in candidates:
        if (root / candidate).is_dir():
            return root / candidate
    tried = ", ".join(str(root / c) for c in candidates)
    raise DataError(f"missing folder for {what}; looked for {tried}")


def choose_source(dataset: str, option: str, what: str, folders: dict[str, Path]) -> str:
    """Which of ``folders`` (kind → folder) a modality is read from: the named kind, or for ``auto``
    the first kind whose folder exists (extracted files before the distributed videos). When none
    exists, the first: a cache built from it still opens, and decoding names the missing files."""
    if option not in ("auto", *folders):
        raise ConfigError(f"{dataset} option {what}_source must be 'auto' or one of {list(folders)}, got {option!r}")
    if option != "auto":
        return option
    return next((kind for kind, folder in folders.items() if folder.is_dir()), next(iter(folders)))


# ----------------------------------------------------------------------------------------------- audio


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] and the sample rate of a PCM or float WAV file."""
    wavfile = require("scipy.io.wavfile", "datasets", "reading WAV files")

    require_file(path, "audio")
    try:
        with warnings.catch_warnings():  # metadata chunks (LIST, INFO) are common and harmless
            warnings.simplefilter("ignore", wavfile.WavFileWarning)
            rate, samples = wavfile.read(path)
    except Exception as error:
        raise DataError(f"cannot read WAV file {path}: {error}") from None
    if samples.dtype.kind in "iu":
        info = np.iinfo(samples.dtype)
        samples = (samples.astype(np.float32) - (info.max + info.min + 1) / 2) / ((info.max - info.min + 1) / 2)
    samples = samples.astype(np.float32, copy=False)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if samples.size == 0:
        raise DataError(f"WAV file {path} holds no samples")
    return samples, int(rate)


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] and the rate of a WAV file, or of a video file's audio track."""
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return read_audio_track(path)
    return read_wav(path)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return samples
    resample_poly = require("scipy.signal", "datasets", "resampling audio").resample_poly
    divisor = math.gcd(rate, target)
    return resample_poly(samples, target // divisor, rate // divisor).astype(np.float32)


def tile_to(samples: np.ndarray, length: int) -> np.ndarray:
    """Repeat a short signal until it is ``length`` samples long, then cut: the field's fixed-length rule."""
    repeats = -(-length // len(samples))
    return np.tile(samples, repeats)[:length]


@dataclass(frozen=True)
class SpectrogramRecipe:
    """Audio → fixed-length signal → ``log(|STFT| + 1e-7)`` with a Hann window, computed by ``torch.stft``.

    ``seconds`` of audio at ``sample_rate`` are taken (shorter clips are tiled), clipped to [-1, 1].
    ``standardize`` z-normalises each spectrogram on its own, as PMR's AVE preprocessing does.
    """

    sample_rate: int
    seconds: float
    n_fft: int
    hop_length: int
    center: bool = True
    standardize: bool = False

    def shape(self) -> tuple[int, int, int]:
        length = int(round(self.sample_rate * self.seconds))
        frames = 1 + (length // self.hop_length if self.center else (length - self.n_fft) // self.hop_length)
        return (1, self.n_fft // 2 + 1, frames)

    def __call__(self, path: Path, segment: tuple[float, float] | None = None) -> np.ndarray:
        """The (1, frequencies, frames) spectrogram of ``path``, a WAV file or a video whose audio track
        is read; ``segment`` = (start, end) in seconds."""
        samples, rate = read_audio(path)
        samples = resample(samples, rate, self.sample_rate)
        if segment is not None:
            start, end = (int(round(t * self.sample_rate)) for t in segment)
            if end <= start or start >= len(samples):
                raise DataError(f"{path}: the event segment {segment} s lies outside the audio")
            samples = samples[start:end]
        signal = np.clip(tile_to(samples, int(round(self.sample_rate * self.seconds))), -1.0, 1.0)
        spectrum = torch.stft(
            torch.from_numpy(signal),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=torch.hann_window(self.n_fft),
            center=self.center,
            pad_mode="constant",
            return_complex=True,
        )
        spectrogram = torch.log(spectrum.abs() + 1e-7)
        if self.standardize:
            spectrogram = (spectrogram - spectrogram.mean()) / (spectrogram.std() + 1e-9)
        return spectrogram.unsqueeze(0).numpy()


# ---------------------------------------------------------------------------------------------- images


def image_pixels(image, size: int, mode: str = "RGB") -> np.ndarray:
    """A Pillow image resized to ``size``×``size`` (bilinear), as (channels, H, W) float32 in [0, 1]."""
    Image = require("PIL.Image", "datasets", "reading images")

    pixels = np.asarray(image.convert(mode).resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def read_image(path: Path, size: int, mode: str = "RGB") -> np.ndarray:
    """A JPEG (or any Pillow image) resized to ``size``×``size``, as (channels, H, W) float32 in [0, 1]."""
    Image = require("PIL.Image", "datasets", "reading images")

    require_file(path, "frame")
    try:
        with Image.open(path) as image:
            return image_pixels(image, size, mode)
    except Exception as error:
        raise DataError(f"cannot read image {path}: {error}") from None


def list_images(folder: Path, pattern: str | None = None) -> list[Path]:
    """The JPEG frames in ``folder``, in name order (optionally only names matching the regex ``pattern``)."""
    require_dir(folder, "frame folder")
    names = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if pattern is not None:
        names = [p for p in names if re.fullmatch(pattern, p.name)]
    if not names:
        raise DataError(f"frame folder {folder} holds no .jpg frames")
    return names


def normalized_stack(images: Sequence[np.ndarray]) -> np.ndarray:
    """RGB images (3, S, S) in [0, 1] → one ImageNet-normalised float16 stack (3, frames, S, S)."""
    return np.stack([(image - IMAGENET_MEAN) / IMAGENET_STD for image in images], axis=1).astype(np.float16)


def read_frames(folder: Path, frames: int, size: int, pattern: str | None = None) -> np.ndarray:
    """``frames`` RGB frames spread evenly over the clip, ImageNet-normalised: (3, frames, size, size).

    The test-time transform of the reference code (resize the whole frame to a square, normalise); the
    training-time random crop and flip are applied per batch (:mod:`erlmr.data.augment`). Stored as
    float16.
    """
    names = list_images(folder, pattern)
    return normalized_stack([read_image(names[i], size) for i in pick_evenly(len(names), frames)])


def read_video_frames(
    path: Path, frames: int, size: int, fps: int | None = 1, seconds: tuple[float, float] | None = None
) -> np.ndarray:
    """:func:`read_frames` for a video file: ``frames`` of the frames the extraction scripts keep at
    ``fps`` per second (every frame for None; only seconds start..end with ``seconds``), picked the
    same way from the same list, so the stack equals that of the extracted folder up to JPEG loss."""
    kept = sample_frames(path, fps, seconds)
    return normalized_stack([image_pixels(kept[i], size) for i in pick_evenly(len(kept), frames)])


# ------------------------------------------------------------------------------------------- MATLAB


def load_mat(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The named variables of a MATLAB v5 ``.mat`` file."""
    loadmat = require("scipy.io", "datasets", "reading MATLAB files").loadmat

    require_file(path, "MATLAB file")
    try:
        contents = loadmat(path)
    except Exception as error:
        raise DataError(f"cannot read MATLAB file {path}: {error}") from None
    missing = [k for k in keys if k not in contents]
    if missing:
        found = sorted(k for k in contents if not k.startswith("__"))
        raise DataError(f"MATLAB file {path} has no variable {missing[0]!r}; it holds {found}")
    return {k: np.asarray(contents[k]) for k in keys}
