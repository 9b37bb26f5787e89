"""AV-digits: spoken digit words paired with handwritten digit images, with a built-in modality imbalance.

Sources:

* audio: the ten English words "zero" .. "nine" synthesised offline by espeak-ng
  (https://github.com/espeak-ng/espeak-ng), varied over its English accents, voice variants, pitch, speed
  and amplitude. A *speaker* is one (accent, variant) pair; train and test use disjoint speakers, so the
  test speakers are unseen.
* visual: scikit-learn's bundled handwritten digits (``sklearn.datasets.load_digits``, 1797 images of
  8x8 pixels with values 0..16), a copy of the test part of the UCI "Optical Recognition of Handwritten
  Digits" data set (E. Alpaydin and C. Kaynak, 1998). The images are split into train and test *before*
  pairing, and every clip is paired with a random image of the same digit from its own split.

:func:`build_avdigits` synthesises the clips once and writes an array folder (``train.npz``,
``test.npz``, ``meta.json``). :func:`load_avdigits`, registered as dataset ``"avdigits"``, adds seeded
noise at load time: white noise at ``audio_snr_db`` on the waveform and Gaussian pixel noise of
``image_sigma`` on the images. The defaults (-18 dB, sigma 4) make the visual modality dominant and the
audio modality weak but informative (measured in docs/datasets.md#av-digits).
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import tempfile
import wave
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..errors import DataError
from ..extras import require
from .base import DATASETS, DatasetSplits, Split, stratified_split

CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
MODALITIES = ["audio", "visual"]
SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE  # every clip is exactly 1.0 s long

# espeak-ng's English accents. The mbrola voices are left out: they need extra packages.
ACCENTS = (
    "en",
    "en-us",
    "en-us-nyc",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
)
# Voice variants that keep speech voiced and at the requested speed (no whisper, no "fast").
VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "klatt",
    "klatt2",
    "klatt3",
    "klatt4",
    "croak",
    "grandma",
    "grandpa",
)
SPEAKERS = [f"{accent}+{variant}" for accent in ACCENTS for variant in VARIANTS]  # espeak-ng -v names
PITCH_RANGE = (25, 75)  # espeak-ng -p, default 50
SPEED_RANGE = (140, 200)  # espeak-ng -s in words per minute, default 175
AMPLITUDE_RANGE = (40, 100)  # espeak-ng -a, default 100; louder clips often clip at the int16 limit
ESPEAK_RATE = 22050
BUILD_MODULES = ("sklearn.datasets", "scipy.signal")  # optional packages that building (not loading) needs
SILENCE_FRACTION = 0.02  # samples below this fraction of the peak count as leading/trailing silence
INSTALL_HINT = "install it with `apt-get install espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng` (macOS)"


def default_avdigits_dir(clips: int = 2000, seed: int = 0) -> Path:
    """Cache folder for a build: ``$ERLMR_DATA/avdigits-{clips}-{seed}`` (``ERLMR_DATA`` defaults to ~/.cache/erlmr)."""
    return Path(os.environ.get("ERLMR_DATA", "~/.cache/erlmr")).expanduser() / f"avdigits-{clips}-{seed}"


def ensure_avdigits(root: str | Path | None = None, clips: int | None = None, seed: int | None = None) -> Path:
    """The array folder at ``root`` (None: the default cache folder), built first if it is absent.

    ``clips`` and ``seed`` default to 2000 and 0 for a build; for an existing folder, None accepts what
    it holds and a value must match it.
    """
    build_clips, build_seed = (2000 if clips is None else clips), (0 if seed is None else seed)
    folder = Path(root) if root is not None else default_avdigits_dir(build_clips, build_seed)
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        return build_avdigits(folder, clips=build_clips, seed=build_seed)
    meta = json.loads(meta_path.read_text())
    if (clips is not None and meta["clips"] != clips) or (seed is not None and meta["seed"] != seed):
        raise DataError(
            f"{folder} holds AV-digits built with clips={meta['clips']}, seed={meta['seed']} but "
            f"clips={clips}, build_seed={seed} was asked for; pass matching options or another root"
        )
    return folder


def build_avdigits(
    out: Path, clips: int = 2000, seed: int = 0, test_fraction: float = 0.3, workers: int = 2, progress: bool = True
) -> Path:
    """Synthesise ``clips`` clips and write the array folder ``out``; the same seed gives identical arrays.

    The folder is written under a temporary name and renamed when complete, so a folder named ``out``
    is always a finished build.
    """
    for module in BUILD_MODULES:  # before any synthesis, not in the middle of it
        require(module, "datasets", "building AV-digits")
    if shutil.which("espeak-ng") is None:
        raise DataError(f"AV-digits needs the espeak-ng speech synthesiser, which is not on PATH; {INSTALL_HINT}")
    out = Path(out)
    if out.exists() and not (out / "meta.json").exists() and any(out.iterdir()):
        raise DataError(f"{out} exists and is not an AV-digits folder; refusing to replace it, choose another folder")
    plan, meta = _plan(clips, seed, test_fraction)
    audio = _synthesise_all(plan, workers, progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the finished folder should read like any other
    try:
        for split_name in ("train", "test"):
            rows = plan["split"] == split_name
            arrays = {name: values[rows] for name, values in plan.items() if name != "split"}
            np.savez_compressed(staging / f"{split_name}.npz", audio=audio[rows], **arrays)
        (staging / "meta.json").write_text(json.dumps(meta, indent=2))
        _replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _replace_folder(staging: Path, out: Path) -> None:
    """Rename ``staging`` to ``out``, moving an older ``out`` aside first and deleting it afterwards."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.rename(old / out.name)
    os.rename(staging, out)
    if old is not None:
        shutil.rmtree(old)


def _plan(
    clips: int, seed: int, test_fraction: float, spoken: int = len(CLASSES)
) -> tuple[dict[str, np.ndarray], dict]:
    """Every random choice of a build, drawn up front from one generator: per-clip arrays and the metadata.
    Only the digits 0 .. ``spoken`` - 1 are used."""
    rng = np.random.default_rng(seed)
    speaker_order = rng.permutation(len(SPEAKERS))
    n_test_speakers = max(1, round(test_fraction * len(SPEAKERS)))
    speaker_pools = {
        "test": np.sort(speaker_order[:n_test_speakers]),
        "train": np.sort(speaker_order[n_test_speakers:]),
    }

    from sklearn.datasets import load_digits

    digits = load_digits()
    train_images, test_images = stratified_split(digits.target, test_fraction, int(rng.integers(2**31)))
    image_pools = {"train": train_images, "test": test_images}

    parts = []
    for split_name, n in zip(("train", "test"), _split_sizes(clips, test_fraction, spoken)):
        labels = rng.permutation(np.arange(n) % spoken)
        pool = image_pools[split_name]
        parts.append(
            {
                "split": np.full(n, split_name),
                "label": labels.astype(np.int64),
                "speaker": rng.choice(speaker_pools[split_name], size=n).astype(np.int64),
                "image_id": np.array([rng.choice(pool[digits.target[pool] == y]) for y in labels], dtype=np.int64),
                "pitch": rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1, size=n),
                "speed": rng.integers(SPEED_RANGE[0], SPEED_RANGE[1] + 1, size=n),
                "amplitude": rng.integers(AMPLITUDE_RANGE[0], AMPLITUDE_RANGE[1] + 1, size=n),
            }
        )
    plan = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    plan["visual"] = (digits.images[plan["image_id"]] / 16.0).astype(np.float32)
    meta = {
        "modalities": MODALITIES,
        "classes": CLASSES,
        "speakers": SPEAKERS,
        "train_speakers": [SPEAKERS[i] for i in speaker_pools["train"]],
        "test_speakers": [SPEAKERS[i] for i in speaker_pools["test"]],
        "seed": seed,
        "clips": clips,
        "test_fraction": test_fraction,
        "sample_rate": SAMPLE_RATE,
        # The audio depends on the synthesiser: another espeak-ng version speaks other waveforms.
        "espeak_ng": espeak_version(),
    }
    return plan, meta


def espeak_version() -> str:
    """espeak-ng's own version line, e.g. ``eSpeak NG text-to-speech: 1.51  Data at: ...`` (first part)."""
    try:
        done = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.split("Data at")[0].strip() or "unknown"


def _split_sizes(clips: int, test_fraction: float, digits: int) -> tuple[int, int]:
    """Train and test clip counts; each split needs every digit at least once."""
    n_test = round(test_fraction * clips)
    if not 0 < test_fraction < 1 or min(n_test, clips - n_test) < digits:
        raise DataError(
            f"clips={clips} with test_fraction={test_fraction} leaves {clips - n_test} train and {n_test} test clips; "
            f"each split needs at least {digits} (one per digit) and test_fraction must be between 0 and 1"
        )
    return clips - n_test, n_test


def _synthesise_all(plan: dict[str, np.ndarray], workers: int, progress: bool) -> np.ndarray:
    """int16 audio of shape (clips, CLIP_SAMPLES), in plan order, synthesised by ``workers`` processes."""
    jobs = [
        (CLASSES[label], SPEAKERS[speaker], int(pitch), int(speed), int(amplitude))
        for label, speaker, pitch, speed, amplitude in zip(
            plan["label"], plan["speaker"], plan["pitch"], plan["speed"], plan["amplitude"]
        )
    ]
    with Pool(max(1, workers)) as pool:
        clips = pool.imap(_synthesise_clip, jobs, chunksize=16)
        return np.stack(list(tqdm(clips, total=len(jobs), desc="AV-digits: synthesising", disable=not progress)))


def _synthesise_clip(job: tuple[str, str, int, int, int]) -> np.ndarray:
    """One word spoken by espeak-ng, resampled to 16 kHz and centred in a 1 s int16 clip."""
    from scipy.signal import resample_poly

    word, voice, pitch, speed, amplitude = job
    command = ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-a", str(amplitude), "--stdout", word]
    result = subprocess.run(command, capture_output=True)
    if result.returncode != 0:
        raise DataError(f"{' '.join(command)} failed: {result.stderr.decode(errors='replace').strip()}")
    with wave.open(io.BytesIO(result.stdout)) as wav:
        if (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) != (ESPEAK_RATE, 2, 1):
            raise DataError(f"espeak-ng wrote unexpected audio {wav.getparams()} for {' '.join(command)}")
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float64)
    if not np.any(samples):
        raise DataError(f"espeak-ng produced no audio for: {' '.join(command)}")
    # 16000 / 22050 = 320 / 441; the polyphase filter removes what would alias above 8 kHz.
    resampled = resample_poly(samples, 320, 441)
    return _centre_in_clip(np.clip(np.round(resampled), -32768, 32767).astype(np.int16))


def _centre_in_clip(samples: np.ndarray) -> np.ndarray:
    """Cut leading and trailing silence and centre what is left in CLIP_SAMPLES samples (cut evenly if longer)."""
    magnitude = np.abs(samples.astype(np.int32))
    loud = np.flatnonzero(magnitude > SILENCE_FRACTION * magnitude.max())
    speech = samples[loud[0] : loud[-1] + 1]
    if len(speech) > CLIP_SAMPLES:
        start = (len(speech) - CLIP_SAMPLES) // 2
        return speech[start : start + CLIP_SAMPLES]
    clip = np.zeros(CLIP_SAMPLES, dtype=np.int16)
    start = (CLIP_SAMPLES - len(speech)) // 2
    clip[start : start + len(speech)] = speech
    return clip


def _hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """Triangular filters on the HTK mel scale from 0 Hz to Nyquist, shape (n_mels, n_fft // 2 + 1)."""
    bin_hz = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    nyquist_mel = _hz_to_mel(torch.tensor(sample_rate / 2, dtype=torch.float64))
    edges = _mel_to_hz(torch.linspace(0.0, float(nyquist_mel), n_mels + 2, dtype=torch.float64))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_hz - lower) / (centre - lower)
    falling = (upper - bin_hz) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


def log_mel(
    wave: torch.Tensor, sample_rate: int = SAMPLE_RATE, n_fft: int = 400, hop: int = 160, n_mels: int = 40
) -> torch.Tensor:
    """Log mel power spectrogram of waveforms (N, T), shape (N, 1, n_mels, 1 + T // hop)."""
    window = torch.hann_window(n_fft, dtype=wave.dtype, device=wave.device)
    spectrum = torch.stft(wave, n_fft, hop_length=hop, window=window, center=True, return_complex=True)
    filters = mel_filterbank(sample_rate, n_fft, n_mels).to(wave.device, wave.dtype)
    mel_power = filters @ spectrum.abs().pow(2)
    return torch.log(mel_power + 1e-6).unsqueeze(1)


def _noisy_audio(audio: np.ndarray, snr_db: float | None, rng: np.random.Generator) -> torch.Tensor:
    """int16 clips as floats in [-1, 1] plus white noise at ``snr_db`` relative to each clip's own power."""
    waveforms = audio.astype(np.float32) / 32768.0
    if snr_db is not None and math.isfinite(snr_db):
        signal_power = np.mean(waveforms**2, axis=1, keepdims=True)
        noise_std = np.sqrt(signal_power / 10.0 ** (snr_db / 10.0)).astype(np.float32)
        waveforms = waveforms + noise_std * rng.standard_normal(waveforms.shape, dtype=np.float32)
    return torch.from_numpy(waveforms)


def _log_mel_batched(waveforms: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """:func:`log_mel` in chunks, so the complex spectrogram of the whole set never sits in memory at once."""
    return torch.cat([log_mel(chunk) for chunk in waveforms.split(batch)])


def _noisy_images(images: np.ndarray, sigma: float, rng: np.random.Generator) -> torch.Tensor:
    """Images (N, 8, 8) in [0, 1] plus Gaussian noise of ``sigma`` on the original 0..16 scale, shape (N, 1, 8, 8)."""
    noisy = images + (sigma / 16.0) * rng.standard_normal(images.shape, dtype=np.float32)
    return torch.from_numpy(noisy.astype(np.float32)).unsqueeze(1)


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        return dict(npz)


@DATASETS.register(
    "avdigits",
    "spoken digits (espeak-ng) paired with handwritten digits (sklearn); audio weak, visual dominant by default",
)
def load_avdigits(
    root: str | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    audio_snr_db: float | None = -18.0,
    image_sigma: float = 4.0,
    clips: int | None = None,
    build_seed: int | None = None,
) -> DatasetSplits:
    """Load AV-digits with seeded load-time noise; ``root`` None means the default cache folder, built if absent.

    ``clips`` and ``build_seed`` choose the build (default 2000 clips, seed 0); with an existing ``root``
    they may be left out.

    ``audio_snr_db`` is the per-clip signal-to-noise ratio of added white noise (None or inf: no noise);
    ``image_sigma`` the standard deviation of pixel noise on the 0..16 scale. Audio becomes a standardised
    log-mel spectrogram (N, 40, 101): mel bands as channels, frames as positions, for a 1-D CNN over time,
    as keyword-spotting models do; standardised with train-split statistics per band. Images are (N, 1, 8, 8).
    The validation split is a label-stratified ``val_fraction`` of train.
    """
    folder = ensure_avdigits(root, clips, build_seed)
    arrays = {name: _read_arrays(folder / f"{name}.npz") for name in ("train", "test")}
    # One independent noise stream per (split, modality), so changing one option leaves the others' noise alone.
    spectrograms = {
        name: _log_mel_batched(_noisy_audio(arrays[name]["audio"], audio_snr_db, np.random.default_rng([seed, i, 0])))[
            :, 0
        ]
        for i, name in enumerate(("train", "test"))
    }
    mean = spectrograms["train"].mean(dim=(0, 2), keepdim=True)
    std = spectrograms["train"].std(dim=(0, 2), keepdim=True).clamp_min(1e-6)
    splits = {
        name: Split(
            {
                "audio": (spectrograms[name] - mean) / std,
                "visual": _noisy_images(arrays[name]["visual"], image_sigma, np.random.default_rng([seed, i, 1])),
            },
            torch.from_numpy(arrays[name]["label"]),
        )
        for i, name in enumerate(("train", "test"))
    }
    keep, held_out = stratified_split(splits["train"].labels.numpy(), val_fraction, seed)
    return DatasetSplits(
        name="avdigits",
        modalities=list(MODALITIES),
        classes=list(CLASSES),
        train=splits["train"].subset(keep),
        val=splits["train"].subset(held_out),
        test=splits["test"],
        default_encoders={"audio": "cnn1d", "visual": "cnn2d"},
    )
