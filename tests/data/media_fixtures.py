"""Tiny audio-visual dataset folders holding real encoded videos (made here with PyAV) next to the
frames the field's extraction scripts would write from them, so a test can read both layouts.

The frames are smooth (codecs keep them well) and change from frame to frame (taking a neighbouring
frame instead of the right one is a large error). The extracted JPEGs are written from the source
frames, at the positions the reference scripts keep: the first frame of every second (OGM-GE, PMR), or
every frame (UCF101's two-stream release).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from dataset_fixtures import write_jpeg, write_lines
from PIL import Image
from scipy.io import wavfile

from erlmr.data.video import write_video

FPS = 10
SECONDS = 3
HEIGHT, WIDTH = 48, 64


def smooth_frames(seed: int, count: int = FPS * SECONDS) -> np.ndarray:
    """(count, H, W, 3) uint8: colour waves whose phase moves 0.3 rad per frame."""
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, 3)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    wave = 2 * np.pi * (x / WIDTH + 0.5 * y / HEIGHT)
    frames = [[128 + 90 * np.sin(wave + phase[c] + 0.3 * t) for c in range(3)] for t in range(count)]
    return np.stack(frames).transpose(0, 2, 3, 1).round().astype(np.uint8)


def tone(seed: int, rate: int, seconds: float = SECONDS) -> np.ndarray:
    """A chirp with a little noise, int16."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    signal = 0.4 * np.sin(2 * np.pi * (rng.uniform(300, 900) + rng.uniform(100, 600) * t) * t)
    return (32767 * (signal + 0.01 * rng.standard_normal(len(t)))).astype(np.int16)


def write_frame(path: Path, frame: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame).save(path, format="JPEG", quality=95)  # OpenCV's imencode default, as the scripts use


def write_clip(
    video: Path, seed: int, rate: int, audio_codec: str | None = None, wav: Path | None = None
) -> np.ndarray:
    """Encode a clip (frames and its tone as the audio track) to ``video``, and the tone to ``wav``;
    returns the source frames."""
    frames, sound = smooth_frames(seed), tone(seed, rate)
    write_video(video, frames, FPS, sound / 32768.0, rate, bit_rate=2_000_000, audio_codec=audio_codec)
    if wav is not None:
        wav.parent.mkdir(parents=True, exist_ok=True)
        wavfile.write(wav, rate, sound)
    return frames


def kept(frames: np.ndarray, first: int = 0, last: int = SECONDS) -> list[tuple[int, np.ndarray]]:
    """(frame number, frame) of the first frame of each second first..last, as the scripts keep them."""
    return [(n, frames[n]) for n in range(0, len(frames), FPS) if first <= n // FPS <= last]


def write_crema_d(root: Path, audio_codec: str | None = None) -> list[str]:
    """OGM-GE's CREMA-D layout with VideoFlash/*.flv, AudioWAV/*.wav (22.05 kHz) and Image-01-FPS/."""
    clips = [f"10{a:02d}_DFA_{e}_XX" for e in ("NEU", "HAP", "ANG") for a in (1, 2, 4, 5)]
    tests = [f"1003_IEO_{e}_HI" for e in ("NEU", "HAP", "ANG")]
    for name, listed in (("train.csv", clips), ("test.csv", tests)):
        write_lines(root / name, [f"{c},{c.split('_')[2]}" for c in listed], "\r\n")
    for seed, clip in enumerate(clips + tests):
        frames = write_clip(
            root / "VideoFlash" / f"{clip}.flv", seed, 22050, audio_codec, root / "AudioWAV" / f"{clip}.wav"
        )
        for number, frame in kept(frames):
            write_frame(root / "Image-01-FPS" / clip / f"{number:05d}.jpg", frame)
    return clips + tests


def write_ave(root: Path) -> list[str]:
    """PMR's AVE layout: the lists, AVE/*.mp4, Audios/*.wav and the event frames Image-01-FPS-SE/."""
    rows = {
        "trainSet.txt": [("Church bell", "RUhOCu3LNXM", 1, 2), ("Bark", "MH3m4AwEcRY", 0, 3)],
        "valSet.txt": [("Church bell", "2An2JMGMbbs", 0, 0)],
        "testSet.txt": [("Bark", "VWi2ENBuTbw", 2, 3)],
    }
    for name, listed in rows.items():
        write_lines(root / name, [f"{c}&{v}&good&{s}&{e}" for c, v, s, e in listed])
    for seed, (_, video, start, end) in enumerate(r for listed in rows.values() for r in listed):
        frames = write_clip(root / "AVE" / f"{video}.mp4", seed, 16000, wav=root / "Audios" / f"{video}.wav")
        first, last = (start, end) if end > start else (0, SECONDS)  # no event segment: the whole clip
        for number, frame in kept(frames, first, last):
            write_frame(root / "Image-01-FPS-SE" / video / f"{number:05d}.jpg", frame)
    return [v for listed in rows.values() for _, v, _, _ in listed]


def write_kinetics_sounds(root: Path) -> list[str]:
    """OGM-GE's lists, Kinetics clips in class folders under videos/, and 1-fps frames visual/."""
    listed = {
        "my_train.txt": [
            ("--4-0ihtnBU_000058_000068", 4),
            ("-0BIyqJj9ZU_000030_000040", 30),
            ("_2o7gv8p9ag_000010_000020", 4),
            ("-a_b-c_d_e_000001_000011", 30),
        ],
        "my_test.txt": [("-3Mwkq-7TV4_000002_000012", 4), ("zz-Top_q-w_000007_000017", 30)],
    }
    for name, clips in listed.items():
        write_lines(root / name, [f"{c},10,{label}" for c, label in clips], "\r\n")
    for seed, (clip, label) in enumerate(c for clips in listed.values() for c in clips):
        frames = write_clip(root / "videos" / "train" / f"class{label}" / f"{clip}.mp4", seed, 16000)
        for k, (_, frame) in enumerate(kept(frames), 1):
            write_frame(root / "visual" / clip / f"frame_{k:05d}.jpg", frame)
    return [c for clips in listed.values() for c, _ in clips]


def write_vggsound(root: Path) -> list[str]:
    """vggsound.csv and OGM-GE's folders: the downloaded {split}-videos/{split}-set/*.mp4 and what its
    scripts make of them, {split}-audios/ WAVs and {split}-set-img/Image-01-FPS/<clip>.mp4/ frames."""
    rows = [
        ("---g-f_I2yQ", 1, "people marching", "train"),
        ("-0jeONf82dE", 21, "bee, wasp, etc. buzzing", "train"),
        ("-0Gfz9zX0Ck", 30, "people marching", "train"),
        ("-1BzXU2b8Ts", 0, "bee, wasp, etc. buzzing", "train"),
        ("-2Rfm5HGe8c", 12, "people marching", "test"),
        ("-4rVk5CzBoI", 150, "bee, wasp, etc. buzzing", "test"),
    ]
    write_lines(root / "vggsound.csv", [f'{v},{s},"{label}",{split}' for v, s, label, split in rows])
    for seed, (video, start, _, split) in enumerate(rows):
        name = f"{video}_{start}"
        wav = root / f"{split}-audios" / f"{split}-set" / f"{name}.wav"
        frames = write_clip(root / f"{split}-videos" / f"{split}-set" / f"{name}.mp4", seed, 16000, wav=wav)
        for number, frame in kept(frames):
            write_frame(
                root / f"{split}-videos" / f"{split}-set-img" / "Image-01-FPS" / f"{name}.mp4" / f"{number:05d}.jpg",
                frame,
            )
    return [f"{v}_{s}" for v, s, _, _ in rows]


def write_ucf101(root: Path) -> list[str]:
    """The split lists, UCF-101/<Class>/<video>.avi, every frame in jpegs_256/ and TV-L1 flow JPEGs."""
    classes = ["ApplyEyeMakeup", "HandstandPushups"] + [f"Action{i:03d}" for i in range(3, 102)]
    lists = root / "ucfTrainTestlist"
    write_lines(lists / "classInd.txt", [f"{i} {c}" for i, c in enumerate(classes, 1)], "\r\n")
    videos = {
        "train": [(1, "ApplyEyeMakeup", f"v_ApplyEyeMakeup_g{g:02d}_c01") for g in (8, 9)]
        + [(2, "HandstandPushups", f"v_HandStandPushups_g{g:02d}_c01") for g in (8, 9)],
        "test": [
            (1, "ApplyEyeMakeup", "v_ApplyEyeMakeup_g01_c02"),
            (2, "HandstandPushups", "v_HandStandPushups_g01_c02"),
        ],
    }
    write_lines(lists / "trainlist01.txt", [f"{c}/{v}.avi {label}" for label, c, v in videos["train"]], "\r\n")
    write_lines(lists / "testlist01.txt", [f"{c}/{v}.avi" for _, c, v in videos["test"]], "\r\n")
    everything = videos["train"] + videos["test"]
    for seed, (_, folder, video) in enumerate(everything):
        frames = smooth_frames(seed)
        write_video(root / "UCF-101" / folder / f"{video}.avi", frames, FPS, bit_rate=2_000_000)
        for k, frame in enumerate(frames, 1):
            write_frame(root / "jpegs_256" / video / f"frame{k:06d}.jpg", frame)
            if k < len(frames):
                for axis in "uv":
                    write_jpeg(root / "tvl1_flow" / axis / video / f"frame{k:06d}.jpg", size=16, gray=True)
    return [v for _, _, v in everything]
