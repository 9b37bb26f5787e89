"""AV-digits as real media files in the CREMA-D layout: a raw-media demo and test fixture.

:func:`build_avdigits_media` speaks the digits 0-5 with espeak-ng as AV-digits does
(:mod:`erlmr.data.avdigits`: unseen voices in test, images split before pairing) and writes, per clip,
what CREMA-D (Cao et al., IEEE Trans. Affective Computing 2014) distributes: ``AudioWAV/<clip>.wav``
(16 kHz, 16-bit mono) and ``VideoFlash/<clip>.flv`` (Sorenson Spark video at 30 fps with the spoken
word as its MP3 audio track at 22.05 kHz), the video showing the clip's handwritten digit (scikit-learn's
8x8 digits, enlarged) drifting slowly across the frame; plus the OGM-GE lists ``train.csv`` /
``test.csv``. Digit d is labelled with the d-th CREMA-D class (NEU, HAP, SAD, FEA, DIS, ANG) and each
clip is named like a CREMA-D clip (actor_sentence_emotion_level, the actor being the voice), so
``erlmr data prepare crema-d --root DIR`` and ``erlmr train --dataset crema-d --data DIR`` read it as
they read CREMA-D, decoding the videos (nothing is extracted first). The same seed gives the same clips.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import wave
from collections import Counter
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import DataError
from ..extras import require
from .avdigits import CLIP_SAMPLES, INSTALL_HINT, SAMPLE_RATE, _plan, _replace_folder, _synthesise_all
from .crema_d import CLASSES as EMOTIONS
from .video import import_av, write_video

SENTENCES = ("DFA", "IEO", "IOM", "ITH", "ITS", "IWL", "IWW", "MTI", "TAI", "TIE", "TSI", "WSI")  # CREMA-D's 12
LEVELS = ("XX", "LO", "MD", "HI")
FPS = 30
SECONDS = 2  # the one-second word in the middle of two seconds, about a CREMA-D clip's length
FRAME_SHAPE = (120, 160)  # height, width: CREMA-D's 360 x 480 at a third
DIGIT_PIXELS = 56  # side of the enlarged 8x8 digit
DRIFT_PIXELS = 16  # how far the digit moves over a clip
TRACK_RATE = 22050  # FLV carries MP3 at 11.025, 22.05 or 44.1 kHz


def default_media_dir(clips: int, seed: int) -> Path:
    return Path(os.environ.get("ERLMR_DATA", "~/.cache/erlmr")).expanduser() / f"avdigits-media-{clips}-{seed}"


def clip_names(plan: dict[str, np.ndarray]) -> list[str]:
    """A CREMA-D name per clip: actor 1001 + voice, a sentence code and level making it unique."""
    seen: Counter = Counter()
    names = []
    for speaker, label in zip(plan["speaker"], plan["label"]):
        actor, emotion = 1001 + int(speaker), EMOTIONS[int(label)]
        k = seen[actor, emotion]
        seen[actor, emotion] += 1
        if k >= len(SENTENCES) * len(LEVELS):
            raise DataError(f"too many clips for voice {actor} and {emotion}: at most {len(SENTENCES) * len(LEVELS)}")
        names.append(f"{actor}_{SENTENCES[k % len(SENTENCES)]}_{emotion}_{LEVELS[k // len(SENTENCES)]}")
    return names


def render_frames(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(FPS·SECONDS, H, W, 3) uint8 frames: the 8x8 digit (values in [0, 1]) enlarged, in a random
    colour on a dark background, drifting DRIFT_PIXELS in a random direction."""
    Image = require("PIL.Image", "datasets", "drawing the AV-digits videos")
    digit = np.asarray(Image.fromarray((image * 255).astype(np.uint8)).resize((DIGIT_PIXELS,) * 2, Image.BILINEAR))
    colour = rng.uniform(0.5, 1.0, size=3)
    background = rng.uniform(0, 60, size=3)
    height, width = FRAME_SHAPE
    start = np.array([height, width]) / 2 - DIGIT_PIXELS / 2 + rng.uniform(-12, 12, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    step = DRIFT_PIXELS * np.array([np.sin(angle), np.cos(angle)]) / (FPS * SECONDS)
    frames = np.empty((FPS * SECONDS, height, width, 3), dtype=np.uint8)
    for t in range(len(frames)):
        top, left = np.clip(np.round(start + t * step).astype(int), 0, [height - DIGIT_PIXELS, width - DIGIT_PIXELS])
        canvas = np.broadcast_to(background, (height, width, 3)).copy()
        patch = canvas[top : top + DIGIT_PIXELS, left : left + DIGIT_PIXELS]
        patch += digit[..., None] * colour * (1 - patch / 255)
        frames[t] = np.clip(canvas, 0, 255).astype(np.uint8)
    return frames


def write_clip(job: tuple[Path, str, np.ndarray, np.ndarray, int]) -> None:
    """One clip's WAV (16 kHz) and FLV (video + MP3 track at TRACK_RATE)."""
    folder, name, speech, image, seed = job
    samples = np.zeros(SAMPLE_RATE * SECONDS, dtype=np.int16)
    offset = (len(samples) - CLIP_SAMPLES) // 2
    samples[offset : offset + CLIP_SAMPLES] = speech
    with wave.open(str(folder / "AudioWAV" / f"{name}.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(samples.astype("<i2").tobytes())
    resample_poly = require("scipy.signal", "datasets", "resampling the AV-digits audio").resample_poly
    track = resample_poly(samples / 32768.0, 441, 320)  # 16 kHz → 22.05 kHz
    frames = render_frames(image, np.random.default_rng(seed))
    write_video(folder / "VideoFlash" / f"{name}.flv", frames, FPS, np.clip(track, -1, 1), TRACK_RATE)


def build_avdigits_media(out: Path, clips: int = 600, seed: int = 0, workers: int = 2, progress: bool = True) -> Path:
    """Write ``clips`` clips of the digits 0-5 to ``out`` in the CREMA-D layout (see the module).

    Written under a temporary name and renamed when complete, so a folder named ``out`` is finished.
    """
    if shutil.which("espeak-ng") is None:
        raise DataError(f"AV-digits needs the espeak-ng speech synthesiser, which is not on PATH; {INSTALL_HINT}")
    import_av()
    out = Path(out)
    if out.exists() and not (out / "meta.json").exists() and any(out.iterdir()):
        raise DataError(f"{out} exists and is not an AV-digits media folder; refusing to replace it, choose another")
    plan, meta = _plan(clips, seed, 0.3, spoken=len(EMOTIONS))
    speech = _synthesise_all(plan, workers, progress)
    names = clip_names(plan)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    staging.chmod(0o755)
    try:
        for sub in ("AudioWAV", "VideoFlash"):
            (staging / sub).mkdir()
        for split in ("train", "test"):
            rows = [f"{n},{EMOTIONS[int(y)]}\r\n" for n, y, s in zip(names, plan["label"], plan["split"]) if s == split]
            (staging / f"{split}.csv").write_text("".join(rows), newline="")
        jobs = [(staging, n, speech[i], plan["visual"][i], seed * 1_000_003 + i) for i, n in enumerate(names)]
        with Pool(max(1, workers)) as pool:
            written = pool.imap(write_clip, jobs, chunksize=4)
            for _ in tqdm(written, total=len(jobs), desc="AV-digits media: encoding", disable=not progress):
                pass
        meta.update(layout="crema-d", digits=len(EMOTIONS), labels=EMOTIONS, fps=FPS, seconds=SECONDS)
        (staging / "meta.json").write_text(json.dumps(meta, indent=2))
        _replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
