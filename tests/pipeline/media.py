"""Inputs for pipeline tests, made in tmp_path from the shared data: bad files and a rotated phone clip."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_clip(path: Path, frames: list[np.ndarray], *, fps: int = 12, rotation: int = 0) -> Path:
    """An H.264 MP4 of RGB frames; ``rotation`` sets the display matrix as phones do."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, width=width, height=height, pix_fmt="yuv420p")
        if rotation:
            stream.set_display_rotation(rotation)
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def rotated_phone_clip(path: Path, photo: np.ndarray, *, frames: int = 12) -> Path:
    """The photo stored sideways (rotated clockwise) with display rotation 90: upright when played."""
    sideways = np.ascontiguousarray(np.rot90(photo[: photo.shape[0] // 2 * 2, : photo.shape[1] // 2 * 2], k=-1))
    return write_clip(path, [sideways] * frames, rotation=90)


def truncated_copy(source: Path, path: Path, fraction: float = 0.6) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def undecodable_copy(source: Path, path: Path) -> Path:
    """Container intact, video payload replaced by noise: FFmpeg opens it but cannot decode it."""
    data = bytearray(source.read_bytes())
    start = data.find(b"mdat") + 8
    data[start:-16] = np.random.default_rng(0).integers(0, 256, len(data) - 16 - start, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def joined_clip(path: Path, parts: list[tuple[Path, int, int]], *, size_wh: tuple[int, int] = (640, 360),
                fps: int = 24) -> tuple[Path, list[int]]:
    """Frames ``start:stop`` of each (video, start, stop) joined by hard cuts into one clip, every frame resized
    to ``size_wh``; returns the clip and the index of the first frame of each part after the first (the cuts)."""
    import cv2

    from pipeline.sources.file import iter_frames

    frames: list[np.ndarray] = []
    cuts: list[int] = []
    for source, start, stop in parts:
        if frames:
            cuts.append(len(frames))
        for frame in iter_frames(source):
            if frame.index >= stop:
                break
            if frame.index >= start:
                image = frame.to_rgb(0)
                frames.append(image if image.shape[1::-1] == size_wh
                              else cv2.resize(image, size_wh, interpolation=cv2.INTER_AREA))
    return write_clip(path, frames, fps=fps), cuts
