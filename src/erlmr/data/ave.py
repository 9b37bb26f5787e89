"""AVE, the Audio-Visual Event dataset: 4143 ten-second YouTube clips of 28 event categories.

Tian et al., "Audio-Visual Event Localization in Unconstrained Videos", ECCV 2018
(github.com/YapengTian/AVE-ECCV18). Read in the layout of the PMR reference code (Fan et al., CVPR 2023,
github.com/fanyunfeng-bit/Modal-Imbalance-PMR), which OGM-GE-style papers share: the official
``trainSet.txt`` / ``valSet.txt`` / ``testSet.txt`` (``Category&VideoID&Quality&Start&End`` rows, 3339 /
402 / 402), audio extracted to ``Audios/<VideoID>.wav`` and frames of the event extracted at 1 fps to
``Image-01-FPS-SE/<VideoID>/*.jpg``, or, without those folders, the distributed ``AVE/<VideoID>.mp4``
itself: its audio track, and the frames PMR's ``video_preprocessing.py`` (``extractImage_SE``) keeps,
one per second of the event's seconds Start..End (:mod:`erlmr.data.video`). The official validation
split is used as is.

Audio as PMR computes it: the event segment [Start, End] s at 16 kHz, tiled to 10 s, log STFT with
n_fft 512 and hop 159 (no centring), each spectrogram z-normalised → (1, 257, 1004); a row whose End is
not after its Start uses the whole clip. Visual: ``frames`` frames spread over the folder →
(3, frames, S, S). Classes in PMR's order (first appearance in the annotations). The 45 videos the
annotations list under two categories are left out, as OGM-GE does, so that a video never carries two
labels or sits in two splits. At training, PMR's random resized crop and horizontal flip (``augment``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict

from ..errors import DataError
from .augment import FrameAugment
from .base import DATASETS
from .media import SpectrogramRecipe, choose_source, class_index, read_frames, read_lines, read_video_frames
from .store import Recipe, Record, RecordedSplits, dataset_root, load_recipe, require_positive

CLASSES = [
    "Church bell",
    "Male speech, man speaking",
    "Bark",
    "Fixed-wing aircraft, airplane",
    "Race car, auto racing",
    "Female speech, woman speaking",
    "Helicopter",
    "Violin, fiddle",
    "Flute",
    "Ukulele",
    "Frying (food)",
    "Truck",
    "Shofar",
    "Motorcycle",
    "Acoustic guitar",
    "Train horn",
    "Clock",
    "Banjo",
    "Goat",
    "Baby cry, infant cry",
    "Bus",
    "Chainsaw",
    "Cat",
    "Horse",
    "Toilet flush",
    "Rodents, rats, mice",
    "Accordion",
    "Mandolin",
]
AUDIO = SpectrogramRecipe(sample_rate=16000, seconds=10.0, n_fft=512, hop_length=159, center=False, standardize=True)
LISTS = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}


def read_list(path, split: str) -> list[tuple[str, str, tuple[float, float] | None, str]]:
    """(video id, category, event segment or None, where) for every row of an AVE list."""
    rows = []
    for number, line in read_lines(path, f"the AVE {split} list"):
        if line.startswith("Category&"):
            continue
        fields = line.split("&")
        where = f"{path}, line {number}"
        if len(fields) != 5:
            raise DataError(f"{where}: expected 'Category&VideoID&Quality&Start&End', got {line!r}")
        try:
            start, end = float(fields[3]), float(fields[4])
        except ValueError:
            times = f"{fields[3]!r}, {fields[4]!r}"
            raise DataError(f"{where}: the event start and end must be seconds, got {times}") from None
        rows.append((fields[1], fields[0], (start, end) if end > start else None, where))
    return rows


@DATASETS.register("ave", "AVE audio-visual events: audio spectrogram + frames, 28 classes (PMR layout)")
def load_ave(
    root: str | None,
    seed: int = 0,
    val_fraction: float = 0.1,
    frames: int = 3,
    image_size: int = 224,
    visual_source: str = "auto",
    audio_source: str = "auto",
    augment: bool = True,
    cache: bool = True,
    cache_dir: str | None = None,
    skip_bad: bool = False,
    workers: int | None = None,
) -> RecordedSplits:
    """``val_fraction`` is unused: AVE ships its own validation list. ``visual_source``: ``frames``
    (``Image-01-FPS-SE/``), ``video`` (``AVE/``) or ``auto`` (frames when that folder exists);
    ``audio_source``: ``wav`` (``Audios/``), ``video`` or ``auto``."""
    require_positive("ave", frames=frames, image_size=image_size)
    folder = dataset_root(root, "ave")
    audio_root, frames_root, videos = folder / "Audios", folder / "Image-01-FPS-SE", folder / "AVE"
    visual = choose_source("ave", visual_source, "visual", {"frames": frames_root, "video": videos})
    audio = choose_source("ave", audio_source, "audio", {"wav": audio_root, "video": videos})
    audio_file = {"wav": lambda v: audio_root / f"{v}.wav", "video": lambda v: videos / f"{v}.mp4"}[audio]
    visual_file = {"frames": lambda v: frames_root / v, "video": lambda v: videos / f"{v}.mp4"}[visual]
    listed = {split: read_list(folder / name, split) for split, name in LISTS.items()}
    counts = Counter(video for rows in listed.values() for video, *_ in rows)
    segments, records = {}, []
    for split, rows in listed.items():
        for video, category, segment, where in rows:
            label = class_index(CLASSES, category, where)
            if counts[video] == 1:
                segments[video] = segment
                source = (
                    f"video {video} ({', '.join(dict.fromkeys(map(str, (audio_file(video), visual_file(video)))))})"
                )
                records.append(Record(video, label, split, video, source))

    def read_visual(video: str):
        if visual == "frames":
            return read_frames(frames_root / video, frames, image_size)
        return read_video_frames(visual_file(video), frames, image_size, fps=1, seconds=segments[video])

    def decode(record: Record) -> dict:
        return {
            "audio": AUDIO(audio_file(record.key), segments[record.key])[None],
            "visual": read_visual(record.key)[None],
        }

    recipe = Recipe(
        name="ave",
        modalities=["audio", "visual"],
        classes=CLASSES,
        records=records,
        decode=decode,
        settings={
            "audio": asdict(AUDIO),
            "frames": frames,
            "image_size": image_size,
            "segments": "event",
            "sources": {"audio": audio, "visual": visual},
        },
        sources={split: str(folder / name) for split, name in LISTS.items()},
        default_encoders={"audio": "resnet18", "visual": "resnet18"},
        workers=workers,
        augment=FrameAugment(("visual",)) if augment else None,
    )
    return load_recipe(recipe, folder, seed, val_fraction, cache, cache_dir, skip_bad)
