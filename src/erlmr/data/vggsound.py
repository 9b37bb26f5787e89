"""VGGSound: about 200k ten-second YouTube clips of 309 sound classes.

Chen et al., "VGGSound: A Large-scale Audio-Visual Dataset", ICASSP 2020
(www.robots.ox.ac.uk/~vgg/data/vggsound/). The split and labels come from the official ``vggsound.csv``
(``youtube_id,start_seconds,label,split`` rows, labels with commas quoted); the media in the layout of
the OGM-GE reference code (github.com/GeWu-Lab/OGM-GE_CVPR2022): ``{train,test}-audios/{train,test}-set/
<id>_<start>.wav`` and 1-fps frames in ``{train,test}-videos/{train,test}-set-img/Image-01-FPS/
<id>_<start>.mp4/``, or, without those folders, the downloaded videos ``{train,test}-videos/
{train,test}-set/<id>_<start>.mp4`` themselves: frames sampled at 1 fps as OGM-GE's
``video_preprocessing.py`` does and the audio track resampled to 16 kHz as its ``mp4_to_wav.py`` (ffmpeg
``-ar 16000``) does (:mod:`erlmr.data.video`). A name with the start zero-padded to six digits is found
too.

Classes in order of first appearance among the train rows, as OGM-GE does. Audio as OGM-GE: 16 kHz,
tiled to 5 s (OGM-GE takes a random 5 s window of the tiled clip; the cache keeps the first),
log STFT with n_fft 256 and hop 128 → (1, 129, 626). Visual: ``frames`` frames → (3, frames, S, S); at
training, OGM-GE's random resized crop and horizontal flip (``augment``).
Many YouTube clips are no longer downloadable: pass ``skip_bad=true`` to train on those present, and
the loader reports how many were missing.
"""

from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path

from ..errors import DataError
from .augment import FrameAugment
from .base import DATASETS
from .media import SpectrogramRecipe, choose_source, class_index, read_frames, read_lines, read_video_frames
from .store import Recipe, Record, RecordedSplits, dataset_root, load_recipe, require_positive

AUDIO = SpectrogramRecipe(sample_rate=16000, seconds=5.0, n_fft=256, hop_length=128)
SPLIT_NAMES = ("train", "test")


def media_name(folder: Path, video: str, start: str, suffix: str) -> Path:
    """``<id>_<start><suffix>`` in ``folder``, or the zero-padded ``<id>_<start:06d>`` when only that exists."""
    plain = folder / f"{video}_{start}{suffix}"
    padded = folder / f"{video}_{int(start):06d}{suffix}"
    return padded if not plain.exists() and padded.exists() else plain


def read_csv(path: Path) -> list[tuple[str, str, str, str, str]]:
    """(youtube id, start, label, split, where) for every row of ``vggsound.csv``."""
    rows = []
    for number, line in read_lines(path, "the VGGSound label list"):
        fields = next(csv.reader([line]))
        if len(fields) != 4 or fields[3] not in SPLIT_NAMES or not fields[1].strip().isdigit():
            raise DataError(
                f"{path}, line {number}: expected 'youtube_id,start_seconds,label,train|test', got {line!r}"
            )
        rows.append((fields[0], fields[1].strip(), fields[2], fields[3], f"{path}, line {number}"))
    return rows


@DATASETS.register("vggsound", "VGGSound: audio spectrogram + frames, 309 classes (official CSV, OGM-GE layout)")
def load_vggsound(
    root: str | None,
    seed: int = 0,
    val_fraction: float = 0.1,
    frames: int = 3,
    image_size: int = 224,
    csv_file: str = "vggsound.csv",
    visual_source: str = "auto",
    audio_source: str = "auto",
    augment: bool = True,
    cache: bool = True,
    cache_dir: str | None = None,
    skip_bad: bool = False,
    workers: int | None = None,
) -> RecordedSplits:
    """``visual_source``: ``frames`` (``*-set-img/Image-01-FPS/``), ``video`` (``*-videos/*-set/``) or
    ``auto`` (frames when the train folder exists); ``audio_source``: ``wav`` (``*-audios/``), ``video``
    or ``auto``."""
    require_positive("vggsound", frames=frames, image_size=image_size)
    folder = dataset_root(root, "vggsound")
    path = folder / csv_file
    rows = read_csv(path)
    classes = list(dict.fromkeys(label for *_, label, split, _ in rows if split == "train"))
    roots = {
        "wav": {s: folder / f"{s}-audios" / f"{s}-set" for s in SPLIT_NAMES},
        "frames": {s: folder / f"{s}-videos" / f"{s}-set-img" / "Image-01-FPS" for s in SPLIT_NAMES},
        "video": {s: folder / f"{s}-videos" / f"{s}-set" for s in SPLIT_NAMES},
    }
    visual = choose_source("vggsound", visual_source, "visual", {k: roots[k]["train"] for k in ("frames", "video")})
    audio = choose_source("vggsound", audio_source, "audio", {k: roots[k]["train"] for k in ("wav", "video")})
    suffix = {"wav": ".wav", "frames": ".mp4", "video": ".mp4"}  # OGM-GE names each frame folder <clip>.mp4
    records, media = [], {}
    for video, start, label, split, where in rows:
        key = f"{video}_{start}"
        media[key] = (video, start)
        shown = dict.fromkeys(str(roots[kind][split] / f"{key}{suffix[kind]}") for kind in (audio, visual))
        records.append(Record(key, class_index(classes, label, where), split, key, f"clip {key} ({', '.join(shown)})"))

    def media_file(record: Record, kind: str) -> Path:
        return media_name(roots[kind][record.split], *media[record.key], suffix[kind])

    def read_visual(record: Record):
        clip = media_file(record, visual)
        return (
            read_frames(clip, frames, image_size) if visual == "frames" else read_video_frames(clip, frames, image_size)
        )

    def decode(record: Record) -> dict:
        return {"audio": AUDIO(media_file(record, audio))[None], "visual": read_visual(record)[None]}

    recipe = Recipe(
        name="vggsound",
        modalities=["audio", "visual"],
        classes=classes,
        records=records,
        decode=decode,
        settings={
            "audio": asdict(AUDIO),
            "frames": frames,
            "image_size": image_size,
            "sources": {"audio": audio, "visual": visual},
        },
        sources={"train": f"{path} (train rows)", "test": f"{path} (test rows)"},
        default_encoders={"audio": "resnet18", "visual": "resnet18"},
        workers=workers,
        augment=FrameAugment(("visual",)) if augment else None,
    )
    return load_recipe(recipe, folder, seed, val_fraction, cache, cache_dir, skip_bad)
