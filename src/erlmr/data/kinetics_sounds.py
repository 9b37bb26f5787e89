"""Kinetics-Sounds: the 31-class audio-visual subset of Kinetics used by OGM-GE and its successors.

Arandjelović & Zisserman, "Look, Listen and Learn", ICCV 2017 (the Kinetics-Sounds idea); the 31-class
lists of OGM-GE (Peng et al., CVPR 2022, github.com/GeWu-Lab/OGM-GE_CVPR2022, ``data/KineticSound/
my_train.txt`` / ``my_test.txt``: ``clip,10,label`` rows, 14799 / 2597 clips, labels 0..30 without
published names). Audio is the Kaldi filter bank OGM-GE's ``process_audio.py`` saves per clip as a
(1024, 128) ``.npy``; frames are extracted at 1 fps as ``frame_00001.jpg``, ... as in BalanceBenchmark
(github.com/GeWu-Lab/BalanceBenchmark).

Samples: audio (1, 1024, 128); visual ``frames`` frames spread over the clip → (3, frames, S, S).
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError
from .base import DATASETS
from .media import class_index, read_frames, read_lines, require_file
from .store import Record, Recipe, RecordedSplits, dataset_root, load_recipe, require_positive

CLASSES = [str(c) for c in range(31)]
FBANK_SHAPE = (1024, 128)


def read_fbank(path) -> np.ndarray:
    require_file(path, "audio filter bank")
    try:
        fbank = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"cannot read {path}: {error}") from None
    if fbank.shape != FBANK_SHAPE:
        raise DataError(f"{path} holds an array of shape {fbank.shape}; expected the {FBANK_SHAPE} filter bank")
    return fbank.astype(np.float32)[None]


@DATASETS.register("kinetics-sounds", "Kinetics-Sounds: audio filter bank + frames, 31 classes (OGM-GE lists)")
def load_kinetics_sounds(
    root: str | None,
    seed: int = 0,
    val_fraction: float = 0.1,
    frames: int = 3,
    image_size: int = 224,
    audio_dir: str = "audio",
    visual_dir: str = "visual",
    cache: bool = True,
    cache_dir: str | None = None,
    skip_bad: bool = False,
) -> RecordedSplits:
    require_positive("kinetics-sounds", frames=frames, image_size=image_size)
    folder = dataset_root(root, "kinetics-sounds")
    audio_root, frames_root = folder / audio_dir, folder / visual_dir
    lists = {"train": folder / "my_train.txt", "test": folder / "my_test.txt"}
    records = []
    for split, path in lists.items():
        for number, line in read_lines(path, f"the Kinetics-Sounds {split} list"):
            fields = [f.strip() for f in line.split(",")]
            if len(fields) != 3:
                raise DataError(f"{path}, line {number}: expected 'clip,10,label', got {line!r}")
            clip = fields[0]
            label = class_index(CLASSES, fields[2], f"{path}, line {number}")
            source = f"clip {clip} ({audio_root / clip}.npy, {frames_root / clip})"
            records.append(Record(clip, label, split, clip, source))

    def decode(record: Record) -> dict:
        return {
            "audio": read_fbank(audio_root / f"{record.key}.npy")[None],
            "visual": read_frames(frames_root / record.key, frames, image_size)[None],
        }

    recipe = Recipe(
        name="kinetics-sounds",
        modalities=["audio", "visual"],
        classes=CLASSES,
        records=records,
        decode=decode,
        settings={"frames": frames, "image_size": image_size, "audio_dir": audio_dir, "visual_dir": visual_dir},
        sources={split: str(path) for split, path in lists.items()},
        default_encoders={"audio": "resnet18", "visual": "resnet18"},
    )
    return load_recipe(recipe, folder, seed, val_fraction, cache, cache_dir, skip_bad)
