"""CREMA-D: 7442 acted clips of 91 actors speaking with one of six emotions (audio + face video).

Cao et al., "CREMA-D: Crowd-sourced Emotional Multimodal Actors Dataset", IEEE Trans. Affective
Computing 2014 (github.com/CheyneyComputerScience/CREMA-D). Read in the layout of the OGM-GE reference
code (Peng et al., CVPR 2022, github.com/GeWu-Lab/OGM-GE_CVPR2022): its ``train.csv`` / ``test.csv``
(``clip,EMOTION`` rows, 6698 / 744 clips), the distributed ``AudioWAV/<clip>.wav`` files, and either
the distributed videos ``VideoFlash/<clip>.flv`` or the frames OGM-GE's ``video_preprocessing.py``
extracts from them at 1 fps into ``Image-01-FPS/<clip>/*.jpg``. A video is decoded with the same frame
sampling as that script (:mod:`erlmr.data.video`); without ``AudioWAV/``, the audio comes from the
videos' audio track.

Audio as in OGM-GE: 22.05 kHz, tiled to 3 s, ``log(|STFT| + 1e-7)`` with n_fft 512 and hop 353 →
(1, 257, 188). Visual: ``frames`` frames spread over the clip, resized to ``image_size`` and
ImageNet-normalised → (3, frames, S, S); at training, OGM-GE's random resized crop and horizontal flip
(``augment``, :mod:`erlmr.data.augment`). Classes in OGM-GE's order.
"""

from __future__ import annotations

import csv
from dataclasses import asdict

from ..errors import DataError
from .augment import FrameAugment
from .base import DATASETS
from .media import SpectrogramRecipe, choose_source, class_index, read_frames, read_lines, read_video_frames
from .store import Recipe, Record, RecordedSplits, dataset_root, load_recipe, require_positive

CLASSES = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]
AUDIO = SpectrogramRecipe(sample_rate=22050, seconds=3.0, n_fft=512, hop_length=353)


def read_list(path, split: str) -> list[tuple[str, int]]:
    """(clip, label) for every ``clip,EMOTION`` row of an OGM-GE list."""
    rows = []
    for number, line in read_lines(path, f"the CREMA-D {split} list"):
        fields = next(csv.reader([line]))
        if len(fields) < 2:
            raise DataError(f"{path}, line {number}: expected 'clip,EMOTION', got {line!r}")
        rows.append((fields[0].strip(), class_index(CLASSES, fields[1].strip(), f"{path}, line {number}")))
    return rows


@DATASETS.register("crema-d", "CREMA-D emotions: audio spectrogram + face frames, 6 classes (OGM-GE layout)")
def load_crema_d(
    root: str | None,
    seed: int = 0,
    val_fraction: float = 0.1,
    frames: int = 1,
    image_size: int = 224,
    fps: int = 1,
    audio_dir: str = "AudioWAV",
    video_dir: str = "VideoFlash",
    visual_source: str = "auto",
    audio_source: str = "auto",
    train_list: str = "train.csv",
    test_list: str = "test.csv",
    augment: bool = True,
    cache: bool = True,
    cache_dir: str | None = None,
    skip_bad: bool = False,
    workers: int | None = None,
) -> RecordedSplits:
    """``visual_source``: ``frames`` (``Image-{fps:02d}-FPS/``), ``video`` (``video_dir``) or ``auto``
    (frames when that folder exists); ``audio_source``: ``wav`` (``audio_dir``), ``video`` or ``auto``."""
    require_positive("crema-d", frames=frames, image_size=image_size, fps=fps)
    folder = dataset_root(root, "crema-d")
    videos = folder / video_dir
    frames_root = folder / f"Image-{fps:02d}-FPS"
    visual = choose_source("crema-d", visual_source, "visual", {"frames": frames_root, "video": videos})
    audio = choose_source("crema-d", audio_source, "audio", {"wav": folder / audio_dir, "video": videos})
    audio_file = {"wav": lambda clip: folder / audio_dir / f"{clip}.wav", "video": lambda clip: videos / f"{clip}.flv"}[
        audio
    ]
    visual_file = {"frames": lambda clip: frames_root / clip, "video": lambda clip: videos / f"{clip}.flv"}[visual]
    records = [
        Record(clip, label, split, clip, f"clip {clip} ({audio_file(clip)}, {visual_file(clip)})")
        for split, name in (("train", train_list), ("test", test_list))
        for clip, label in read_list(folder / name, split)
    ]

    def read_visual(clip: str):
        path = visual_file(clip)
        return (
            read_frames(path, frames, image_size)
            if visual == "frames"
            else read_video_frames(path, frames, image_size, fps)
        )

    def decode(record: Record) -> dict:
        return {"audio": AUDIO(audio_file(record.key))[None], "visual": read_visual(record.key)[None]}

    recipe = Recipe(
        name="crema-d",
        modalities=["audio", "visual"],
        classes=CLASSES,
        records=records,
        decode=decode,
        settings={
            "audio": asdict(AUDIO),
            "audio_dir": audio_dir,
            "frames": frames,
            "image_size": image_size,
            "fps": fps,
            "sources": {"audio": audio, "visual": visual},
            "video_dir": video_dir,
        },
        sources={"train": str(folder / train_list), "test": str(folder / test_list)},
        default_encoders={"audio": "resnet18", "visual": "resnet18"},
        workers=workers,
        augment=FrameAugment(("visual",)) if augment else None,
    )
    return load_recipe(recipe, folder, seed, val_fraction, cache, cache_dir, skip_bad)
