"""UCF101 action recognition as two modalities: RGB frames and TV-L1 optical flow, 101 classes.

Soomro, Zamir & Shah, "UCF101: A Dataset of 101 Human Actions Classes From Videos in The Wild",
CRCV-TR-12-01, 2012 (www.crcv.ucf.edu/data/UCF101.php). The official ``ucfTrainTestlist/`` gives the
classes (``classInd.txt``) and three train/test splits (``trainlist0N.txt`` / ``testlist0N.txt``; split 1
has 9537 / 3783 videos); test groups never appear in train. Frames and flow in the layout of the
two-stream release (Feichtenhofer et al., CVPR 2016) that BalanceBenchmark's UCF101 loader
(github.com/GeWu-Lab/BalanceBenchmark) also reads: ``jpegs_256/<video>/frame000001.jpg`` and
``tvl1_flow/{u,v}/<video>/frame000001.jpg``. Folder names are matched without regard to case, since the
lists write ``HandstandPushups`` where the videos say ``HandStandPushups``. Without ``jpegs_256/``, the
RGB frames are decoded from the distributed videos ``UCF-101/<Class>/<video>.avi`` (every frame, as the
two-stream release extracts them; :mod:`erlmr.data.video`); the TV-L1 flow is read from its release.

Samples: RGB ``frames`` frames spread over the video, ImageNet-normalised → (3, frames, S, S); flow the
same positions of the x (u) and y (v) flow images mapped from [0, 255] to [-1, 1] → (2, frames, S, S).
The validation split is carved from whole training groups, since the clips of one group come from the
same long video. At training, BalanceBenchmark's horizontal flip of the RGB and flow frames (``augment``;
it crops nothing).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import DataError
from .augment import FrameAugment
from .base import DATASETS
from .media import (
    choose_source,
    find_dir,
    list_images,
    pick_evenly,
    read_frames,
    read_image,
    read_lines,
    read_video_frames,
)
from .store import Recipe, Record, RecordedSplits, dataset_root, load_recipe, require_positive
from .video import index_videos

GROUP = re.compile(r"_g(\d+)_c\d+$")
FRAME_ROOTS = ["jpegs_256", "ucf101_jpegs_256/jpegs_256"]  # the two-stream release, unzipped or not


@lru_cache(maxsize=8)
def lowercase_names(folder: Path) -> dict[str, str]:
    return {p.name.lower(): p.name for p in folder.iterdir()} if folder.is_dir() else {}


def video_dir(folder: Path, video: str) -> Path:
    """``folder/video``, or the entry of ``folder`` that matches ``video`` up to case."""
    exact = folder / video
    return exact if exact.is_dir() else folder / lowercase_names(folder).get(video.lower(), video)


def read_flow(u_root: Path, v_root: Path, video: str, frames: int, size: int) -> np.ndarray:
    u_names, v_names = list_images(video_dir(u_root, video)), list_images(video_dir(v_root, video))
    if len(u_names) != len(v_names):
        raise DataError(
            f"video {video}: the flow modalities disagree, {video_dir(u_root, video)} has {len(u_names)} frames "
            f"but {video_dir(v_root, video)} has {len(v_names)}"
        )
    picked = pick_evenly(len(u_names), frames)
    stack = [np.concatenate([read_image(names[i], size, "L") for names in (u_names, v_names)]) for i in picked]
    return ((np.stack(stack, axis=1) - 0.5) / 0.5).astype(np.float16)


def read_classes(path: Path) -> list[str]:
    classes: list[str] = []
    for number, line in read_lines(path, "the UCF101 class index"):
        fields = line.split()
        if len(fields) != 2 or fields[0] != str(len(classes) + 1):
            raise DataError(f"{path}, line {number}: expected '{len(classes) + 1} ClassName', got {line!r}")
        classes.append(fields[1])
    return classes


def parse_list(path: Path, split: str, classes: list[str]) -> list[Record]:
    lookup = {c.lower(): i for i, c in enumerate(classes)}
    records = []
    for number, line in read_lines(path, f"the UCF101 {split} list"):
        where = f"{path}, line {number}"
        fields = line.split()
        folder, _, file = fields[0].replace("\\", "/").partition("/")
        video = file.rsplit(".", 1)[0]
        group = GROUP.search(video)
        if folder.lower() not in lookup:
            raise DataError(f"unknown label {folder!r} at {where}; classInd.txt lists {len(classes)} classes")
        if not group:
            raise DataError(f"{where}: expected 'Class/v_Class_gGG_cCC.avi', got {line!r}")
        label = lookup[folder.lower()]
        if len(fields) > 1 and fields[1] != str(label + 1):
            raise DataError(f"{where}: label {fields[1]} disagrees with the class folder {folder!r} ({label + 1})")
        records.append(Record(video, label, split, f"g{int(group.group(1)):02d}", f"video {video} ({where})"))
    return records


@DATASETS.register("ucf101", "UCF101 actions: RGB frames + optical flow, 101 classes (official split lists)")
def load_ucf101(
    root: str | None,
    seed: int = 0,
    val_fraction: float = 0.1,
    split: int = 1,
    frames: int = 3,
    image_size: int = 224,
    rgb_source: str = "auto",
    augment: bool = True,
    cache: bool = True,
    cache_dir: str | None = None,
    skip_bad: bool = False,
    workers: int | None = None,
) -> RecordedSplits:
    """``rgb_source``: ``frames`` (``jpegs_256/``), ``video`` (``UCF-101/``) or ``auto`` (frames when
    that folder exists)."""
    require_positive("ucf101", frames=frames, image_size=image_size)
    folder = dataset_root(root, "ucf101")
    if split not in (1, 2, 3):
        raise DataError(f"UCF101 has the official splits 1, 2 and 3, got split={split}")
    lists_root = find_dir(folder, ["ucfTrainTestlist"], "the UCF101 split lists")
    classes = read_classes(lists_root / "classInd.txt")
    lists = {"train": lists_root / f"trainlist0{split}.txt", "test": lists_root / f"testlist0{split}.txt"}
    records = [r for name, path in lists.items() for r in parse_list(path, name, classes)]
    extracted = next((folder / c for c in FRAME_ROOTS if (folder / c).is_dir()), folder / FRAME_ROOTS[0])
    rgb = choose_source("ucf101", rgb_source, "rgb", {"frames": extracted, "video": folder / "UCF-101"})
    flow_root = find_dir(folder, ["tvl1_flow", "ucf101_tvl1_flow/tvl1_flow"], "the UCF101 optical flow")
    read_rgb = rgb_frames(folder, rgb, frames, image_size)

    def decode(record: Record) -> dict:
        return {
            "rgb": read_rgb(record.key)[None],
            "flow": read_flow(flow_root / "u", flow_root / "v", record.key, frames, image_size)[None],
        }

    recipe = Recipe(
        name="ucf101",
        modalities=["rgb", "flow"],
        classes=classes,
        records=records,
        decode=decode,
        settings={"split": split, "frames": frames, "image_size": image_size, "sources": {"rgb": rgb}},
        sources={name: str(path) for name, path in lists.items()},
        default_encoders={"rgb": "resnet18", "flow": "resnet18"},
        val_by_group=True,
        workers=workers,
        augment=FrameAugment(("rgb", "flow"), resized_crop=False) if augment else None,
    )
    return load_recipe(recipe, folder, seed, val_fraction, cache, cache_dir, skip_bad)


def rgb_frames(folder: Path, source: str, frames: int, size: int):
    """The reader of a video's RGB stack: from the extracted JPEGs, or from its ``.avi`` (every frame)."""
    if source == "frames":
        rgb_root = find_dir(folder, FRAME_ROOTS, "the UCF101 RGB frames")
        return lambda video: read_frames(video_dir(rgb_root, video), frames, size)
    videos = {name.lower(): path for name, path in index_videos(folder / "UCF-101").items()}

    def read(video: str):
        return read_video_frames(videos.get(video.lower(), folder / "UCF-101" / f"{video}.avi"), frames, size, fps=None)

    return read
