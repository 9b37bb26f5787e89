"""CREMA-D: 7442 acted clips of 91 actors speaking with one of six emotions (audio + face video).

Cao et al., "CREMA-D: Crowd-sourced Emotional Multimodal Actors Dataset", IEEE Trans. Affective
Computing 2014 (github.com/CheyneyComputerScience/CREMA-D). Read in the layout of the OGM-GE reference
code (Peng et al., CVPR 2022, github.com/GeWu-Lab/OGM-GE_CVPR2022): its ``train.csv`` / ``test.csv``
(``clip,EMOTION`` rows, 6698 / 744 clips), the distributed ``AudioWAV/<clip>.wav`` files and the frames
its ``video_preprocessing.py`` extracts at 1 fps into ``Image-01-FPS/<clip>/*.jpg``.

Audio as in OGM-GE: 22.05 kHz, tiled to 3 s, ``log(|STFT| + 1e-7)`` with n_fft 512 and hop 353 →
(1, 257, 188). Visual: ``frames`` frames spread over the clip, resized to ``image_size`` and
ImageNet-normalised → (3, frames, S, S). Classes in OGM-GE's order.
"""
from __future__ import annotations

import csv
from dataclasses import asdict

from ..errors import DataError
from .base import DATASETS
from .media import SpectrogramRecipe, class_index, read_frames, read_lines
from .store import Record, Recipe, RecordedSplits, dataset_root, load_recipe, require_positive

CLASSES = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]
AUDIO = SpectrogramRecipe(sample_rate=22050, seconds=3.0, n_fft=512, hop_length=353)


@DATASETS.register("crema-d", "CREMA-D emotions: audio spectrogram + face frames, 6 classes (OGM-GE layout)")
def load_crema_d(
    root: str | None,
    seed: int = 0,
    val_fraction: float = 0.1,
    frames: int = 1,
    image_size: int = 224,
    fps: int = 1,
    audio_dir: str = "AudioWAV",
    train_list: str = "train.csv",
    test_list: str = "test.csv",
    cache: bool = True,
    cache_dir: str | None = None,
    skip_bad: bool = False,
) -> RecordedSplits:
    require_positive("crema-d", frames=frames, image_size=image_size, fps=fps)
    folder = dataset_root(root, "crema-d")
    audio_root, frames_root = folder / audio_dir, folder / f"Image-{fps:02d}-FPS"
    records = []
    for split, name in (("train", train_list), ("test", test_list)):
        path = folder / name
        for number, line in read_lines(path, f"the CREMA-D {split} list"):
            fields = next(csv.reader([line]))
            if len(fields) < 2:
                raise DataError(f"{path}, line {number}: expected 'clip,EMOTION', got {line!r}")
            clip, label = fields[0].strip(), fields[1].strip()
            source = f"clip {clip} ({audio_root / clip}.wav, {frames_root / clip})"
            records.append(Record(clip, class_index(CLASSES, label, f"{path}, line {number}"), split, clip, source))

    def decode(record: Record) -> dict:
        return {
            "audio": AUDIO(audio_root / f"{record.key}.wav")[None],
            "visual": read_frames(frames_root / record.key, frames, image_size)[None],
        }

    recipe = Recipe(
        name="crema-d",
        modalities=["audio", "visual"],
        classes=CLASSES,
        records=records,
        decode=decode,
        settings={"audio": asdict(AUDIO), "audio_dir": audio_dir, "frames": frames, "image_size": image_size, "fps": fps},
        sources={"train": str(folder / train_list), "test": str(folder / test_list)},
        default_encoders={"audio": "resnet18", "visual": "resnet18"},
    )
    return load_recipe(recipe, folder, seed, val_fraction, cache, cache_dir, skip_bad)
