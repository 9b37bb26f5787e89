"""VGGSound: about 200k ten-second YouTube clips of 309 sound classes.

Chen et al., "VGGSound: A Large-scale Audio-Visual Dataset", ICASSP 2020
(www.robots.ox.ac.uk/~vgg/data/vggsound/). The split and labels come from the official ``vggsound.csv``
(``youtube_id,start_seconds,label,split`` rows, labels with commas quoted); the media in the layout of
the OGM-GE reference code (github.com/GeWu-Lab/OGM-GE_CVPR2022): ``{train,test}-audios/{train,test}-set/
<id>_<start>.wav`` and 1-fps frames in ``{train,test}-videos/{train,test}-set-img/Image-01-FPS/
<id>_<start>.mp4/``. A name with the start zero-padded to six digits is found too.

Classes in order of first appearance among the train rows, as OGM-GE does. Audio as OGM-GE: 16 kHz,
tiled to 5 s (OGM-GE takes a random 5 s window of the tiled clip; the cache keeps the first),
log STFT with n_fft 256 and hop 128 → (1, 129, 626). Visual: ``frames`` frames → (3, frames, S, S).
Many YouTube clips are no longer downloadable: pass ``skip_bad=true`` to train on those present, and
the loader reports how many were missing.
"""
from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path

from ..errors import DataError
from .base import DATASETS
from .media import SpectrogramRecipe, class_index, read_frames, read_lines
from .store import Record, Recipe, RecordedSplits, dataset_root, load_recipe, require_positive

AUDIO = SpectrogramRecipe(sample_rate=16000, seconds=5.0, n_fft=256, hop_length=128)
SPLIT_NAMES = ("train", "test")


def media_name(folder: Path, video: str, start: str, suffix: str) -> Path:
    """``<id>_<start><suffix>`` in ``folder``, or the zero-padded ``<id>_<start:06d>`` when only that exists."""
    plain = folder / f"{video}_{start}{suffix}"
    padded = folder / f"{video}_{int(start):06d}{suffix}"
    return padded if not plain.exists() and padded.exists() else plain


@DATASETS.register("vggsound", "VGGSound: audio spectrogram + frames, 309 classes (official CSV, OGM-GE layout)")
def load_vggsound(
    root: str | None,
    seed: int = 0,
    val_fraction: float = 0.1,
    frames: int = 3,
    image_size: int = 224,
    csv_file: str = "vggsound.csv",
    cache: bool = True,
    cache_dir: str | None = None,
    skip_bad: bool = False,
) -> RecordedSplits:
    require_positive("vggsound", frames=frames, image_size=image_size)
    folder = dataset_root(root, "vggsound")
    path = folder / csv_file
    rows = []
    for number, line in read_lines(path, "the VGGSound label list"):
        fields = next(csv.reader([line]))
        if len(fields) != 4 or fields[3] not in SPLIT_NAMES or not fields[1].strip().isdigit():
            raise DataError(f"{path}, line {number}: expected 'youtube_id,start_seconds,label,train|test', got {line!r}")
        rows.append((fields[0], fields[1].strip(), fields[2], fields[3], f"{path}, line {number}"))
    classes = list(dict.fromkeys(label for *_, label, split, _ in rows if split == "train"))
    audio_roots = {s: folder / f"{s}-audios" / f"{s}-set" for s in SPLIT_NAMES}
    frame_roots = {s: folder / f"{s}-videos" / f"{s}-set-img" / "Image-01-FPS" for s in SPLIT_NAMES}
    records, media = [], {}
    for video, start, label, split, where in rows:
        key = f"{video}_{start}"
        media[key] = (video, start)
        source = f"clip {key} ({audio_roots[split] / key}.wav, {frame_roots[split] / key}.mp4)"
        records.append(Record(key, class_index(classes, label, where), split, key, source))

    def decode(record: Record) -> dict:
        video, start = media[record.key]
        audio = media_name(audio_roots[record.split], video, start, ".wav")
        visual = media_name(frame_roots[record.split], video, start, ".mp4")
        return {"audio": AUDIO(audio)[None], "visual": read_frames(visual, frames, image_size)[None]}

    recipe = Recipe(
        name="vggsound",
        modalities=["audio", "visual"],
        classes=classes,
        records=records,
        decode=decode,
        settings={"audio": asdict(AUDIO), "frames": frames, "image_size": image_size},
        sources={"train": f"{path} (train rows)", "test": f"{path} (test rows)"},
        default_encoders={"audio": "resnet18", "visual": "resnet18"},
    )
    return load_recipe(recipe, folder, seed, val_fraction, cache, cache_dir, skip_bad)
