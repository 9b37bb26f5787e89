"""UTD-MHAD: 27 actions by 8 subjects, 4 trials each, with inertial, skeleton and depth recordings.

Chen, Jafari & Kehtarnavaz, "UTD-MHAD: A Multimodal Dataset for Human Action Recognition Utilizing a
Depth Camera and a Wearable Inertial Sensor", ICIP 2015 (personal.utdallas.edu/~kehtar/UTD-MHAD.html).
Read from the official ``.mat`` files: ``Inertial/a<a>_s<s>_t<t>_inertial.mat`` (``d_iner``, steps × 6:
acc then gyro, 50 Hz), ``Skeleton/..._skeleton.mat`` (``d_skel``, 20 joints × 3 × frames) and, when
asked for, ``Depth/..._depth.mat`` (``d_depth``, 240 × 320 × frames). Three sequences are absent from
the release (a8_s1_t4, a23_s6_t4, a27_s8_t4), leaving 861.

Standard cross-subject protocol: odd subjects (1, 3, 5, 7) train, even subjects (2, 4, 6, 8) test.
Every sequence is resampled linearly to ``steps`` time steps (the modalities differ in rate and length):
inertial (6, steps) and skeleton (20, 3, steps), each channel (inertial) or coordinate (skeleton)
standardised with training statistics; depth ``frames`` frames spread over the sequence, resized to
``image_size`` and divided by the sequence's largest depth → (1, frames, S, S).
"""

from __future__ import annotations

import re

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .base import DATASETS
from .media import load_mat, pick_evenly, require_dir
from .store import Recipe, Record, RecordedSplits, dataset_root, load_recipe, require_positive

CLASSES = [
    "right arm swipe to the left",
    "right arm swipe to the right",
    "right hand wave",
    "two hand front clap",
    "right arm throw",
    "cross arms in the chest",
    "basketball shoot",
    "right hand draw x",
    "right hand draw circle (clockwise)",
    "right hand draw circle (counter clockwise)",
    "draw triangle",
    "bowling (right hand)",
    "front boxing",
    "baseball swing from right",
    "tennis right hand forehand swing",
    "arm curl (two arms)",
    "tennis serve",
    "two hand push",
    "right hand knock on door",
    "right hand catch an object",
    "right hand pick up and throw",
    "jogging in place",
    "walking in place",
    "sit to stand",
    "stand to sit",
    "forward lunge (left foot forward)",
    "squat (two arms stretch out)",
]
FOLDERS = {"inertial": ("Inertial", "d_iner"), "skeleton": ("Skeleton", "d_skel"), "depth": ("Depth", "d_depth")}
ENCODERS = {"inertial": "sensor_cnn", "skeleton": "skeleton", "depth": "resnet18"}
CHANNEL_AXIS = {"inertial": 0, "skeleton": 1}  # standardised per inertial channel, per skeleton coordinate
NAME = re.compile(r"a(\d+)_s(\d+)_t(\d+)_(inertial|skeleton|depth)\.mat", re.IGNORECASE)


def resample_steps(array: np.ndarray, steps: int) -> np.ndarray:
    """Linear interpolation of the last axis to ``steps`` points spanning the same duration."""
    positions = np.linspace(0, array.shape[-1] - 1, steps)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, array.shape[-1] - 1)
    weight = (positions - low).astype(np.float32)
    return array[..., low] * (1 - weight) + array[..., high] * weight


def decode_modality(modality: str, path, values: np.ndarray, steps: int, frames: int, size: int) -> np.ndarray:
    values = values.astype(np.float32)
    if modality == "inertial":
        if values.ndim != 2 or values.shape[1] != 6:
            raise DataError(f"{path}: d_iner has shape {values.shape}; expected (steps, 6) acc + gyro")
        return resample_steps(values.T, steps)
    if modality == "skeleton":
        if values.ndim != 3 or values.shape[1] != 3:
            raise DataError(f"{path}: d_skel has shape {values.shape}; expected (joints, 3, frames)")
        return resample_steps(values, steps)
    if values.ndim != 3:
        raise DataError(f"{path}: d_depth has shape {values.shape}; expected (height, width, frames)")
    picked = torch.from_numpy(values[:, :, pick_evenly(values.shape[2], frames)]).permute(2, 0, 1)
    resized = torch.nn.functional.interpolate(picked[:, None], size=(size, size), mode="bilinear", align_corners=False)
    return (resized.permute(1, 0, 2, 3) / max(float(values.max()), 1e-6)).numpy().astype(np.float16)


@DATASETS.register("utd-mhad", "UTD-MHAD actions: inertial + skeleton (+ depth), 27 classes, odd/even subjects")
def load_utd_mhad(
    root: str | None,
    seed: int = 0,
    val_fraction: float = 0.1,
    # The options check reads the `list` annotation (a YAML list); the default stays an immutable tuple.
    modalities: list = ("inertial", "skeleton"),  # type: ignore[assignment]
    steps: int = 128,
    frames: int = 4,
    image_size: int = 224,
    cache: bool = True,
    cache_dir: str | None = None,
    skip_bad: bool = False,
) -> RecordedSplits:
    require_positive("utd-mhad", steps=steps, frames=frames, image_size=image_size)
    folder = dataset_root(root, "utd-mhad")
    modalities = list(modalities)
    unknown = sorted(set(modalities) - set(FOLDERS))
    if unknown or len(modalities) < 2:
        raise ConfigError(f"utd-mhad modalities must be two or more of {list(FOLDERS)}, got {modalities}")
    found: dict[str, dict[str, tuple]] = {}
    for modality in modalities:
        for path in require_dir(folder / FOLDERS[modality][0], f"the UTD-MHAD {modality} files").glob("*.mat"):
            match = NAME.fullmatch(path.name)
            if not match or match.group(4).lower() != modality:
                raise DataError(f"unexpected file {path}; expected a<action>_s<subject>_t<trial>_{modality}.mat")
            action, subject, trial = (int(g) for g in match.groups()[:3])
            if not 1 <= action <= len(CLASSES):
                raise DataError(f"unknown label: action {action} in {path}; UTD-MHAD has actions 1..27")
            found.setdefault(f"a{action}_s{subject}_t{trial}", {})[modality] = (action, subject, path)
    records = []
    for key in sorted(found, key=lambda k: tuple(int(n) for n in re.findall(r"\d+", k))):
        action, subject, path = next(iter(found[key].values()))
        split = "train" if subject % 2 else "test"
        records.append(Record(key, action - 1, split, f"subject {subject}", str(path)))

    def decode(record: Record) -> dict:
        arrays = {}
        for modality in modalities:
            directory, variable = FOLDERS[modality]
            path = folder / directory / f"{record.key}_{modality}.mat"
            if modality not in found[record.key]:
                others = ", ".join(sorted(found[record.key]))
                raise DataError(f"missing file {path}: the modalities of {record.key} disagree (only {others} exist)")
            values = load_mat(path, [variable])[variable]
            arrays[modality] = decode_modality(modality, path, values, steps, frames, image_size)[None]
        return arrays

    recipe = Recipe(
        name="utd-mhad",
        modalities=modalities,
        classes=CLASSES,
        records=records,
        decode=decode,
        settings={"modalities": modalities, "steps": steps, "frames": frames, "image_size": image_size},
        sources={"train": f"{folder} (odd subjects 1, 3, 5, 7)", "test": f"{folder} (even subjects 2, 4, 6, 8)"},
        default_encoders={m: ENCODERS[m] for m in modalities},
        standardize={m: CHANNEL_AXIS[m] for m in modalities if m in CHANNEL_AXIS},
    )
    return load_recipe(recipe, folder, seed, val_fraction, cache, cache_dir, skip_bad)
