"""Video files and still images in, decoded frames out (PyAV, threaded decoding).

Frames come out in display orientation: a phone video's rotation metadata is applied, so every
coordinate emoray writes refers to the picture as a player shows it.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from jobs.discover import IMAGE_EXTENSIONS
from pipeline.errors import VideoError

_LUMA_FORMATS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21"})
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG
_VIDEO_TO_FULL_RANGE = np.clip((np.arange(256) - 16) * 255.0 / 219.0 + 0.5, 0, 255).astype(np.uint8)
_THREAD = threading.local()


def reformat(frame: av.VideoFrame, **options) -> av.VideoFrame:
    """``frame.reformat(**options)`` through one swscale context per thread, reused while the sizes and formats
    stay the same. ``VideoFrame.reformat`` makes a context per frame: setting up its filters cost more than
    the scaling itself (a 1280x720 frame to the detector's 640x360 or to a 32x18 thumbnail: ~2.7 ms a frame of
    set-up against ~0.5 ms of work), paid on every decoded frame."""
    if not hasattr(_THREAD, "reformatter"):
        _THREAD.reformatter = VideoReformatter()
    return _THREAD.reformatter.reformat(frame, **options)
DEFAULT_FRAME_RATE = 30.0  # what a file whose container gives no frame rate (or a frame no timestamp) is taken to run at


@dataclass(frozen=True)
class VideoInfo:
    """What probing a file tells; None where the container does not say."""

    path: str
    width: int  # in display orientation
    height: int
    fps: float | None
    frame_count: int | None
    duration: float | None  # seconds
    codec: str
    rotation: int  # counter-clockwise degrees applied for display: 0, 90, 180 or 270
    has_audio: bool
    is_image: bool


@dataclass
class DecodedFrame:
    """One decoded frame and where it sits in its video."""

    index: int  # 0-based position in the video stream, in presentation order
    pts_time: float  # seconds from the stream start
    frame: av.VideoFrame

    def to_rgb(self, rotation: int, size_wh: tuple[int, int] | None = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB in display orientation, resized by swscale to ``size_wh`` (display w, h) if given."""
        return _rotate(self._reformat("rgb24", rotation, size_wh), rotation)

    def to_gray(self, rotation: int) -> np.ndarray:
        """(H, W) uint8 full-range gray in display orientation, at full resolution.

        For planar YUV this is the luma plane itself (10x cheaper than swscale), expanded from
        video range (16-235) to full range as swscale's gray conversion does.
        """
        frame = self.frame
        if frame.format.name not in _LUMA_FORMATS:
            return _rotate(frame.to_ndarray(format="gray"), rotation)
        plane = frame.planes[0]
        luma = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : frame.width]
        if frame.format.name.startswith("yuvj") or frame.color_range == _FULL_RANGE:
            return _rotate(np.ascontiguousarray(luma), rotation)
        return _rotate(cv2.LUT(np.ascontiguousarray(luma), _VIDEO_TO_FULL_RANGE), rotation)

    def _reformat(self, pixel_format: str, rotation: int, size_wh: tuple[int, int] | None) -> np.ndarray:
        if size_wh is None:
            return self.frame.to_ndarray(format=pixel_format)
        width, height = size_wh if rotation % 180 == 0 else size_wh[::-1]
        return reformat(self.frame, width=width, height=height, format=pixel_format).to_ndarray()


def _rotate(image: np.ndarray, rotation: int) -> np.ndarray:
    return image if rotation == 0 else np.ascontiguousarray(np.rot90(image, k=rotation // 90))


def _normalized_rotation(degrees: float | int | None) -> int:
    return int(round((degrees or 0) / 90.0)) % 4 * 90


def _open(path: Path) -> av.container.InputContainer:
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if path.is_dir():
        raise VideoError(f"{path}: is a directory, not a video")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except PermissionError as error:
        raise VideoError(f"{path}: cannot read: permission denied") from error
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise VideoError(f"{path}: not a readable video or image ({error})") from error
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video stream")
    return container


def _bucket(pts_time: float, sample_fps: float | None) -> int:
    """Sampling interval a time falls in: a frame is kept when it starts a new interval."""
    return 0 if sample_fps is None else math.floor(pts_time * sample_fps + 1e-6)


def probe(path: str | Path) -> VideoInfo:
    """Read the container header and the first frame: size, fps, frame count, codec, rotation, audio.

    Raises:
        VideoError: naming the file and the reason when it is not a decodable video or image.
    """
    path = Path(path)
    is_image = path.suffix.lower() in IMAGE_EXTENSIONS
    with _open(path) as container:
        stream = container.streams.video[0]
        try:
            first = next(container.decode(stream))
        except StopIteration:
            raise VideoError(f"{path}: no frame could be decoded") from None
        except av.error.FFmpegError as error:
            raise VideoError(f"{path}: cannot decode {stream.codec_context.name} video ({error})") from error
        rotation = _normalized_rotation(getattr(first, "rotation", 0))
        width, height = (first.width, first.height) if rotation % 180 == 0 else (first.height, first.width)
        fps = float(stream.average_rate) if stream.average_rate else None
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        frame_count = stream.frames or None
        if is_image:
            frame_count, duration, fps = 1, None, None
        elif frame_count is None and duration and fps:
            frame_count = int(round(duration * fps))
        return VideoInfo(
            path=str(path), width=width, height=height, fps=fps, frame_count=frame_count, duration=duration,
            codec=stream.codec_context.name, rotation=rotation, has_audio=bool(container.streams.audio),
            is_image=is_image,
        )


def iter_frames(
    path: str | Path,
    *,
    start_time: float = 0.0,
    end_time: float = math.inf,
    first_index: int = 0,
    sample_fps: float | None = None,
) -> Iterator[DecodedFrame]:
    """Decode the frames whose presentation time lies in [start_time, end_time).

    Seeks to the keyframe at or before ``start_time`` and decodes from there, with FFmpeg's frame
    threads. ``first_index`` is the stream index of the first frame at or after ``start_time`` (known
    from planning); ``sample_fps`` keeps about that many frames per second (None keeps every frame).
    Stops at the end of the range, or at the end of the stream.

    Raises:
        VideoError: naming the file and the frame where decoding failed.
    """
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        time_base = stream.time_base or Fraction(1, 1_000_000)
        origin = float(stream.start_time * time_base) if stream.start_time is not None else 0.0
        if start_time > 0:
            container.seek(int((start_time + origin) / time_base), stream=stream, backward=True, any_frame=False)
        index = first_index
        previous_bucket: int | None = None  # the first frame of a range is kept unless pre-roll says otherwise
        try:
            for frame in container.decode(stream):
                pts_time = (float(frame.pts * time_base) - origin) if frame.pts is not None else index / DEFAULT_FRAME_RATE
                bucket = _bucket(pts_time, sample_fps)
                if pts_time < start_time - 1e-6:
                    previous_bucket = bucket
                    continue
                if pts_time >= end_time - 1e-6:
                    return
                if sample_fps is None or bucket != previous_bucket:
                    yield DecodedFrame(index=index, pts_time=pts_time, frame=frame)
                previous_bucket = bucket
                index += 1
        except av.error.FFmpegError as error:
            raise VideoError(f"{path}: decoding stopped after frame {index - 1} (truncated or damaged: {error})") from error
