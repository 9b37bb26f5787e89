"""Tiny dataset folders in the exact layouts the real datasets ship (names, formats, keys, rates).

Each ``write_<dataset>(root)`` creates a handful of recordings and returns what the loader should
find: the class count, the number of train+val and test recordings, and anything a test needs.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat, wavfile

RNG = np.random.default_rng(0)


def write_wav(path: Path, seconds: float = 1.0, rate: int = 16000, channels: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * RNG.uniform(200, 2000) * t) + 0.01 * RNG.standard_normal(len(t))
    samples = (np.stack([tone] * channels, axis=1) if channels > 1 else tone) * 32767
    wavfile.write(path, rate, samples.astype(np.int16))


def write_jpeg(path: Path, size: int = 32, gray: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size) if gray else (size, size, 3)
    Image.fromarray(RNG.integers(0, 256, shape, dtype=np.uint8)).save(path, format="JPEG")


def write_lines(path: Path, lines: list[str], newline: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("".join(line + newline for line in lines)).encode())


def write_crema_d(root: Path) -> dict:
    """OGM-GE layout: train.csv/test.csv (CRLF, no header), AudioWAV/*.wav (16 kHz), Image-01-FPS/<clip>/."""
    emotions = ["NEU", "HAP", "ANG"]
    train = [f"10{a:02d}_DFA_{e}_XX" for e in emotions for a in (1, 2)]
    test = [f"10{a:02d}_IEO_{e}_HI" for e in emotions for a in (3,)]
    for name, clips in (("train.csv", train), ("test.csv", test)):
        write_lines(root / name, [f"{c},{c.split('_')[2]}" for c in clips], "\r\n")
    for clip in train + test:
        write_wav(root / "AudioWAV" / f"{clip}.wav", seconds=1.2)
        for frame in ("00000", "00030"):
            write_jpeg(root / "Image-01-FPS" / clip / f"{frame}.jpg")
    return {"classes": 6, "train": len(train), "test": len(test), "clips": train + test}


def write_ave(root: Path) -> dict:
    """PMR layout: {train,val,test}Set.txt ('&' rows), Audios/<id>.wav (44.1 kHz stereo), Image-01-FPS-SE/<id>/."""
    rows = {
        "trainSet.txt": [
            ("Church bell", "RUhOCu3LNXM", 0, 10),
            ("Church bell", "MH3m4AwEcRY", 6, 8),
            ("Male speech, man speaking", "-0A9suni5YA", 0, 10),
            ("Male speech, man speaking", "-1qyr-IzqK0", 2, 5),
            ("Ukulele", "-1qyr-IzqKY", 0, 10),
        ],
        "valSet.txt": [("Church bell", "2An2JMGMbbs", 0, 10), ("Male speech, man speaking", "0-ld_I8GbQE", 1, 3)],
        "testSet.txt": [
            ("Church bell", "VWi2ENBuTbw", 0, 0),
            ("Male speech, man speaking", "_3f4jhH7fAM", 0, 10),
            ("Accordion", "-1qyr-IzqKY", 0, 10),
        ],
    }
    everything = [r for listed in rows.values() for r in listed]
    write_lines(
        root / "Annotations.txt",
        ["Category&VideoID&Quality&StartTime&EndTime"] + [f"{c}&{v}&good&{s}&{e}" for c, v, s, e in everything],
    )
    for name, listed in rows.items():
        write_lines(root / name, [f"{c}&{v}&good&{s}&{e}" for c, v, s, e in listed])
    for _, video, _, _ in everything:
        write_wav(root / "Audios" / f"{video}.wav", seconds=10.0, rate=8000, channels=2)
        for second in range(3):
            write_jpeg(root / "Image-01-FPS-SE" / video / f"{second * 25:05d}.jpg")
    # -1qyr-IzqKY is listed under two categories (as 45 real AVE videos are) and is left out.
    return {"classes": 28, "train": 4 + 2, "test": 2, "val": 2, "clips": [v for _, v, _, _ in everything]}


def write_kinetics_sounds(root: Path) -> dict:
    """OGM-GE lists my_train.txt/my_test.txt ('clip,10,label', CRLF); audio/<clip>.npy;
    visual/<clip>/frame_0000k.jpg."""
    train = [
        ("--4-0ihtnBU_000058_000068", 4),
        ("-0BIyqJj9ZU_000030_000040", 4),
        ("_2o7gv8p9ag_000010_000020", 30),
        ("-a_b-c_d_e_000001_000011", 30),
    ]
    test = [("-3Mwkq-7TV4_2", 4), ("zz-Top_q-w_7", 30)]
    write_lines(root / "my_train.txt", [f"{c},10,{label}" for c, label in train], "\r\n")
    write_lines(root / "my_test.txt", [f"{c},10,{label}" for c, label in test], "\r\n")
    for clip, _ in train + test:
        (root / "audio").mkdir(parents=True, exist_ok=True)
        np.save(root / "audio" / f"{clip}.npy", RNG.standard_normal((1024, 128)).astype(np.float32))
        for k in range(1, 5):
            write_jpeg(root / "visual" / clip / f"frame_0000{k}.jpg")
    return {"classes": 31, "train": len(train), "test": len(test), "clips": [c for c, _ in train + test]}


def write_vggsound(root: Path) -> dict:
    """The official vggsound.csv (no header, quoted comma labels) and OGM-GE's media folders."""
    rows = [
        ("---g-f_I2yQ", 1, "people marching", "train"),
        ("-0Gfz9zX0Ck", 30, "people marching", "train"),
        ("-0jeONf82dE", 21, "bee, wasp, etc. buzzing", "train"),
        ("-1BzXU2b8Ts", 0, "bee, wasp, etc. buzzing", "train"),
        ("-2Rfm5HGe8c", 12, "people marching", "test"),
        ("-4rVk5CzBoI", 150, "bee, wasp, etc. buzzing", "test"),
    ]
    write_lines(
        root / "vggsound.csv",
        [f'{v},{s},"{label}",{split}' if "," in label else f"{v},{s},{label},{split}" for v, s, label, split in rows],
    )
    for index, (video, start, _, split) in enumerate(rows):
        name = f"{video}_{start:06d}" if index == 1 else f"{video}_{start}"  # a zero-padded dump name too
        write_wav(root / f"{split}-audios" / f"{split}-set" / f"{name}.wav", seconds=3.0)
        for k in range(4):
            write_jpeg(root / f"{split}-videos" / f"{split}-set-img" / "Image-01-FPS" / f"{name}.mp4" / f"{k:05d}.jpg")
    return {"classes": 2, "train": 4, "test": 2, "clips": [f"{v}_{s}" for v, s, _, _ in rows]}


def ucf_classes() -> list[str]:
    classes = [f"Action{i:03d}" for i in range(1, 102)]
    classes[0], classes[36], classes[100] = "ApplyEyeMakeup", "HandstandPushups", "YoYo"
    return classes


def write_ucf101(root: Path) -> dict:
    """ucfTrainTestlist/ (CRLF), jpegs_256/<video>/frame000001.jpg, tvl1_flow/{u,v}/<video>/ (one frame fewer)."""
    classes = ucf_classes()
    lists = root / "ucfTrainTestlist"
    write_lines(lists / "classInd.txt", [f"{i} {c}" for i, c in enumerate(classes, 1)], "\r\n")
    videos = {"train": [], "test": []}
    for label, name, file_name in (
        (1, "ApplyEyeMakeup", "ApplyEyeMakeup"),
        (37, "HandstandPushups", "HandStandPushups"),
    ):
        for group in (8, 9, 10):
            videos["train"].append((label, name, f"v_{file_name}_g{group:02d}_c01"))
        videos["test"].append((label, name, f"v_{file_name}_g01_c02"))
    write_lines(lists / "trainlist01.txt", [f"{n}/{v}.avi {label}" for label, n, v in videos["train"]], "\r\n")
    write_lines(lists / "testlist01.txt", [f"{n}/{v}.avi" for _, n, v in videos["test"]], "\r\n")
    for _, _, video in videos["train"] + videos["test"]:
        folder_name = video.replace("HandStand", "Handstand")  # the two-stream release's spelling
        for k in range(1, 5):
            write_jpeg(root / "jpegs_256" / folder_name / f"frame{k:06d}.jpg")
        for k in range(1, 4):
            for axis in "uv":
                write_jpeg(root / "tvl1_flow" / axis / video / f"frame{k:06d}.jpg", gray=True)
    return {"classes": 101, "train": 6, "test": 2, "clips": [v for _, _, v in videos["train"] + videos["test"]]}


def write_cmu_mosei(root: Path) -> dict:
    """MulT's mosei_senti_data.pkl: {'train','valid','test'} of text/audio/vision/labels/id arrays."""

    def split(n: int, scores: list[float]) -> dict:
        audio = RNG.standard_normal((n, 50, 74)).astype(np.float32)
        audio[0, 3, 5] = -np.inf
        return {
            "text": RNG.standard_normal((n, 50, 300)).astype(np.float32),
            "audio": audio,
            "vision": RNG.standard_normal((n, 50, 35)).astype(np.float32),
            "labels": np.array(scores, dtype=np.float32).reshape(n, 1, 1),
            "id": np.array([[f"vid{i}", "0", "1"] for i in range(n)]),
        }

    data = {
        "train": split(6, [-1.2, 0.0, 0.6, 2.4, -2.0, 1.0]),
        "valid": split(3, [-0.4, 0.2, 1.8]),
        "test": split(4, [-1.2, 0.0, 0.6, 2.4]),
    }
    root.mkdir(parents=True, exist_ok=True)
    with (root / "mosei_senti_data.pkl").open("wb") as file:
        pickle.dump(data, file)
    return {"classes": 2, "train": 6 + 3, "test": 4, "val": 3}


def write_usc_had(root: Path, steps: int = 450) -> dict:
    """Subject<s>/a<m>t<n>.mat with the 13 official fields; sensor_readings (steps, 6) at 100 Hz."""
    for subject in (1, 2, 13, 14):
        folder = root / f"Subject{subject}"
        folder.mkdir(parents=True, exist_ok=True)
        for activity in (1, 2, 3):
            readings = RNG.standard_normal((steps, 6)) * [1, 1, 1, 40, 40, 40] + [0.3, 0.1, 0.9, -0.3, 0, 2]
            savemat(
                folder / f"a{activity}t1.mat",
                {
                    "title": "USC Human Motion Database",
                    "version": "1.0",
                    "date": "2009-10-01",
                    "subject": str(subject),
                    "age": "30",
                    "height": "170cm",
                    "weight": "70kg",
                    "activity": "Walking Forward",
                    "activity_number": str(activity),
                    "trial": "1",
                    "sensor_location": "front right hip",
                    "sensor_orientation": "top",
                    "sensor_readings": readings,
                },
            )
    windows = 1 + (steps - 200) // 100
    return {"classes": 12, "train": 6, "test": 6, "windows": windows}


def write_utd_mhad(root: Path, depth: bool = False) -> dict:
    """Inertial/a<a>_s<s>_t<t>_inertial.mat (d_iner) and Skeleton/..._skeleton.mat (d_skel), optionally Depth/."""
    keys = [(a, s, t) for a in (1, 8) for s in (1, 2, 3) for t in (1, 2, 3, 4) if (a, s, t) != (8, 1, 4)]
    for a, s, t in keys:
        stem = f"a{a}_s{s}_t{t}"
        for folder in ("Inertial", "Skeleton") + (("Depth",) if depth else ()):
            (root / folder).mkdir(parents=True, exist_ok=True)
        savemat(root / "Inertial" / f"{stem}_inertial.mat", {"d_iner": RNG.standard_normal((150 + 7 * t, 6))})
        savemat(root / "Skeleton" / f"{stem}_skeleton.mat", {"d_skel": RNG.standard_normal((20, 3, 60 + 3 * t))})
        if depth:
            savemat(root / "Depth" / f"{stem}_depth.mat", {"d_depth": RNG.integers(0, 4000, (24, 32, 60 + 3 * t))})
    train = sum(1 for _, s, _ in keys if s % 2)
    return {"classes": 27, "train": train, "test": len(keys) - train, "subjects": {"train": {1, 3}, "test": {2}}}
