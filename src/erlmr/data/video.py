"""Decoding the video files datasets ship (``.flv``, ``.mp4``, ``.avi``, ...) with PyAV.

PyAV's wheel carries FFmpeg's libraries, so no system FFmpeg is needed; it is an optional dependency
(``pip install erlmr[media]``), imported only when a video is read.

Frames are sampled as the field's extraction scripts do (OGM-GE, Peng et al., CVPR 2022,
github.com/GeWu-Lab/OGM-GE_CVPR2022, ``data/CREMAD/video_preprocessing.py``; PMR, Fan et al., CVPR 2023,
github.com/fanyunfeng-bit/Modal-Imbalance-PMR, ``data/AVE/video_preprocessing.py``): frames are counted
in decoding order, the native rate is the stream's average frame rate truncated to an integer (what
OpenCV's ``CAP_PROP_FPS`` gives them), and ``fps`` frames are kept per second, evenly spaced from the
first frame of each second. A clip's frames therefore are those the scripts write as
``Image-01-FPS/<clip>/00000.jpg, 00030.jpg, ...``, without the JPEG round trip.

The audio track is decoded to float samples in [-1, 1] and averaged over channels, as
:func:`erlmr.data.media.read_wav` does for a WAV file, so both go through the same resampling.

Every failure of a damaged or unreadable file is a :class:`~erlmr.errors.DataError` naming it. PyAV
raises its own error types and, on some damaged streams, others (ValueError, IndexError, ...), so each
library call is guarded with ``except Exception``; nothing else runs inside those guards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import DataError

VIDEO_SUFFIXES = (".mp4", ".flv", ".avi", ".mkv", ".webm", ".mov")
INSTALL_HINT = "pip install erlmr[media] (or pip install av)"


def import_av() -> Any:
    try:
        import av
    except ImportError:
        raise DataError(f"reading video files needs PyAV, which is not installed; {INSTALL_HINT}") from None
    return av


def open_video(path: Path) -> Any:
    av = import_av()
    if not path.is_file():
        raise DataError(f"missing file {path} (video)")
    try:
        return av.open(str(path))
    except Exception as error:
        raise DataError(f"cannot decode video file {path}: {error}") from None


def decoded(container: Any, stream: Any, path: Path) -> Iterator[Any]:
    """The decoded frames of ``stream``, in order; a decoding error names the file."""
    frames = container.decode(stream)
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except Exception as error:
            raise DataError(f"cannot decode video file {path}: {error}") from None
        yield frame


def keeps_frame(count: int, native_fps: int, fps: int | None) -> bool:
    """Whether the reference scripts keep the ``count``-th frame: ``fps`` evenly spaced frames from the
    start of every second (every frame when ``fps`` is None)."""
    if fps is None:
        return True
    interval = max(1, native_fps // fps)
    position = count % native_fps
    return position < interval * fps and position % interval == 0


def sample_frames(path: Path, fps: int | None, seconds: tuple[float, float] | None = None) -> list[Any]:
    """The frames of ``path`` the extraction scripts keep at ``fps`` per second (every frame for None),
    as PIL RGB images; with ``seconds`` = (start, end), only those of the seconds start..end inclusive
    (PMR's event frames, ``extractImage_SE``)."""
    with open_video(path) as container:
        if not container.streams.video:
            raise DataError(f"video file {path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_count = 1  # one decoder thread: the dataset is decoded by one process per core
        native = int(stream.average_rate or stream.guessed_rate or 0) or 1
        kept = []
        for count, frame in enumerate(decoded(container, stream, path)):
            second = count // native
            if keeps_frame(count, native, fps) and (seconds is None or seconds[0] <= second <= seconds[1]):
                kept.append(frame.to_image())
    if not kept:
        window = "" if seconds is None else f" in seconds {seconds[0]:g}..{seconds[1]:g}"
        raise DataError(f"video file {path} holds no decodable frames{window}")
    return kept


def read_audio_track(path: Path) -> tuple[np.ndarray, int]:
    """The first audio track of ``path``: mono float32 samples in [-1, 1] (the mean of its channels)
    and its sample rate."""
    av = import_av()
    with open_video(path) as container:
        if not container.streams.audio:
            raise DataError(f"video file {path} has no audio track; give the audio as WAV files instead")
        stream = container.streams.audio[0]
        to_float = av.AudioResampler(format="fltp")  # planar float: one row per channel, any source format
        parts = []
        for frame in decoded(container, stream, path):
            parts += [f.to_ndarray() for f in to_float.resample(frame)]
        parts += [f.to_ndarray() for f in to_float.resample(None)]  # what the converter still holds
        rate = stream.rate
    if not parts or not sum(p.shape[1] for p in parts):
        raise DataError(f"the audio track of {path} holds no samples")
    return np.concatenate(parts, axis=1).mean(axis=0).astype(np.float32), int(rate)


# The codecs the distributed files use: CREMA-D's VideoFlash is Sorenson Spark (FLV1) with MP3 audio,
# Kinetics/AVE/VGGSound clips are H.264 with AAC, UCF101's .avi are MPEG-4 part 2 (Xvid).
CODECS = {".flv": ("flv", "mp3"), ".mp4": ("libx264", "aac"), ".avi": ("mpeg4", "mp3")}


def write_video(
    path: Path,
    frames: np.ndarray,
    fps: int,
    audio: np.ndarray | None = None,
    audio_rate: int = 22050,
    bit_rate: int = 1_000_000,
    audio_codec: str | None = None,
) -> None:
    """Encode ``frames`` (T, H, W, 3) uint8 at ``fps`` and, optionally, mono ``audio`` (float in [-1, 1]
    at ``audio_rate``) into ``path``, with the codecs of the dataset that ships that container
    (``audio_codec`` chooses another, e.g. ``pcm_s16le``)."""
    av = import_av()
    video_codec, default_audio = CODECS[path.suffix.lower()]
    audio_codec = audio_codec or default_audio
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream(video_codec, rate=fps)
        video.height, video.width = frames.shape[1:3]
        video.pix_fmt, video.bit_rate = "yuv420p", bit_rate
        sound = None if audio is None else container.add_stream(audio_codec, rate=audio_rate, layout="mono")
        for image in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
        container.mux(video.encode())
        if audio is not None:  # sound is the audio stream, added exactly when there is audio
            encode_audio(container, sound, audio, audio_rate)


def encode_audio(container: Any, stream: Any, audio: np.ndarray, rate: int) -> None:
    av = import_av()
    frame = av.AudioFrame.from_ndarray(np.asarray(audio, dtype=np.float32)[None], format="flt", layout="mono")
    frame.sample_rate = rate
    # The encoder takes fixed-size frames in its own sample format; the resampler cuts and converts.
    fit = av.AudioResampler(
        format=stream.codec_context.format, layout="mono", rate=rate, frame_size=stream.codec_context.frame_size or None
    )
    for part in [*fit.resample(frame), *fit.resample(None)]:
        container.mux(stream.encode(part))
    container.mux(stream.encode())


def index_videos(folder: Path) -> dict[str, Path]:
    """Every video file under ``folder``, at any depth (e.g. Kinetics' ``train/<class>/``), by name
    without suffix; an absent folder has none."""
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.rglob("*")) if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()}
