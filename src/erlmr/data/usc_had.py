"""USC-HAD: 12 daily activities of 14 subjects from a hip-worn IMU (accelerometer + gyroscope, 100 Hz).

Zhang & Sawchuk, "USC-HAD: A Daily Activity Dataset for Ubiquitous Activity Recognition Using Wearable
Sensors", UbiComp 2012 (sipi.usc.edu/had/). Read from the official ``Subject<s>/a<m>t<n>.mat`` files
(activity m, trial n), whose ``sensor_readings`` hold acc x, y, z (g) then gyro x, y, z (deg/s). The
activity and subject come from the file and folder names, not from the ``.mat`` fields. ERL-MR
(Han et al., ACM MM 2024) evaluates on USC-HAD with (3, 200) windows per sensor.

Each recording is cut into ``window``-step windows every ``stride`` steps (defaults: 2 s windows with
50 % overlap) → acc (3, window) and gyro (3, window), each channel standardised with training
statistics. Subject-wise protocol: ``test_subjects`` (default 13 and 14) are the test split and never
appear in train; the validation split is a stratified, seeded share of the training recordings.
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import DataError
from .base import DATASETS
from .media import load_mat, require_dir
from .store import Recipe, Record, RecordedSplits, dataset_root, load_recipe, require_positive

CLASSES = [
    "Walking Forward",
    "Walking Left",
    "Walking Right",
    "Walking Upstairs",
    "Walking Downstairs",
    "Running Forward",
    "Jumping Up",
    "Sitting",
    "Standing",
    "Sleeping",
    "Elevator Up",
    "Elevator Down",
]
SUBJECT = re.compile(r"subject(\d+)", re.IGNORECASE)
RECORDING = re.compile(r"a(\d+)t(\d+)\.mat", re.IGNORECASE)


@DATASETS.register("usc-had", "USC-HAD activities: accelerometer + gyroscope windows, 12 classes, subject-wise split")
def load_usc_had(
    root: str | None,
    seed: int = 0,
    val_fraction: float = 0.1,
    window: int = 200,
    stride: int = 100,
    # The options check reads the `list` annotation (a YAML list); the default stays an immutable tuple.
    test_subjects: list = (13, 14),  # type: ignore[assignment]
    cache: bool = True,
    cache_dir: str | None = None,
    skip_bad: bool = False,
) -> RecordedSplits:
    require_positive("usc-had", window=window, stride=stride)
    folder = require_dir(dataset_root(root, "usc-had"), "the USC-HAD dataset root")
    test = {int(s) for s in test_subjects}
    records = []
    for subject_dir in sorted(p for p in folder.iterdir() if p.is_dir() and SUBJECT.fullmatch(p.name)):
        subject = int(SUBJECT.fullmatch(subject_dir.name).group(1))
        for path in sorted(subject_dir.glob("*.mat")):
            match = RECORDING.fullmatch(path.name)
            if not match:
                raise DataError(f"unexpected file {path}; USC-HAD recordings are named a<activity>t<trial>.mat")
            activity = int(match.group(1))
            if not 1 <= activity <= len(CLASSES):
                raise DataError(f"unknown label: activity {activity} in {path}; USC-HAD has activities 1..12")
            split = "test" if subject in test else "train"
            key = f"{subject_dir.name}/{path.stem}"
            records.append(Record(key, activity - 1, split, f"subject {subject}", str(path)))

    def decode(record: Record) -> dict:
        path = folder / f"{record.key}.mat"
        readings = np.asarray(load_mat(path, ["sensor_readings"])["sensor_readings"], dtype=np.float32)
        if readings.ndim != 2 or readings.shape[1] != 6:
            raise DataError(f"{path}: sensor_readings has shape {readings.shape}; expected (steps, 6) acc + gyro")
        if len(readings) < window:
            raise DataError(f"{path}: {len(readings)} steps is shorter than one window of {window}")
        cut = np.lib.stride_tricks.sliding_window_view(readings, window, axis=0)[::stride]  # (k, 6, window)
        return {"acc": cut[:, :3], "gyro": cut[:, 3:]}

    subjects = ", ".join(f"Subject{s}" for s in sorted(test))
    recipe = Recipe(
        name="usc-had",
        modalities=["acc", "gyro"],
        classes=CLASSES,
        records=records,
        decode=decode,
        settings={"window": window, "stride": stride, "test_subjects": sorted(test)},
        sources={"train": f"{folder} (subjects other than {subjects})", "test": f"{folder} ({subjects})"},
        default_encoders={"acc": "sensor_cnn", "gyro": "sensor_cnn"},
        standardize={"acc": 0, "gyro": 0},
    )
    return load_recipe(recipe, folder, seed, val_fraction, cache, cache_dir, skip_bad)
