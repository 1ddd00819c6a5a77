"""Real sample clips for ``emoray demo`` and ``emoray bench``, made from a photo shipped in a PyPI wheel.

The photo is scikit-image's ``astronaut.png`` (Eileen Collins, NASA, public domain), read by path
from the pinned, checksummed wheel like model weights are (the package is never installed or
imported). A slow pan and zoom over it makes a clip with a real face whose position and size change.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np

from models import registry

ASTRONAUT = registry.WheelSource(
    "scikit-image", "0.26.0", "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af",
    "skimage/data/astronaut.png", "public domain (NASA photo); scikit-image BSD-3-Clause",
    platform="manylinux_2_28_x86_64",
)


def astronaut() -> np.ndarray:
    """The 512x512 RGB astronaut photo."""
    data = np.frombuffer(registry.read_member(ASTRONAUT), np.uint8)
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])


def _view(photo: np.ndarray, progress: float, width: int, height: int) -> np.ndarray:
    """The frame at ``progress`` in [0, 1]: a window drifting and zooming around the face."""
    side = photo.shape[1]
    zoom = 1.0 + 0.5 * (0.5 - 0.5 * math.cos(2 * math.pi * progress))
    window_w = side / zoom
    window_h = min(window_w * height / width, photo.shape[0])
    center_x = side / 2 + 0.12 * side * math.sin(2 * math.pi * progress)
    center_y = 0.33 * photo.shape[0] + 0.05 * photo.shape[0] * math.sin(4 * math.pi * progress)
    x1 = float(np.clip(center_x - window_w / 2, 0, side - window_w))
    y1 = float(np.clip(center_y - window_h / 2, 0, photo.shape[0] - window_h))
    scale_x, scale_y = width / window_w, height / window_h
    transform = np.float32([[scale_x, 0, -x1 * scale_x], [0, scale_y, -y1 * scale_y]])
    return cv2.warpAffine(photo, transform, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _write_mp4(path: str | Path, frames: Iterator[np.ndarray], *, width: int, height: int, fps: int,
               options: dict[str, str]) -> Path:
    """Encode RGB frames as H.264 into ``path``, through a temporary name: a clip that exists is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.stem}.", suffix=".mp4", delete=False) as handle:
        temporary = Path(handle.name)
    try:
        with av.open(str(temporary), "w") as container:
            stream = container.add_stream("libx264", rate=fps, width=width, height=height, pix_fmt="yuv420p",
                                          options={"preset": "veryfast", "crf": "20"} | options)
            for image in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def make_clip(path: str | Path, *, width: int, height: int, seconds: float, fps: int = 24,
              period_seconds: float = 8.0, camera_like: bool = False) -> Path:
    """Write an H.264 MP4 of the astronaut photo panned and zoomed (one cycle per ``period_seconds``).

    ``camera_like`` encodes as IP cameras do (no B-frames, a keyframe every second), for live tests.
    """
    photo = astronaut()
    frames = (_view(photo, (index / fps / period_seconds) % 1.0, width, height)
              for index in range(int(round(seconds * fps))))
    return _write_mp4(path, frames, width=width, height=height, fps=fps,
                      options={"tune": "zerolatency", "g": str(fps)} if camera_like else {})


def make_crowd_clip(path: str | Path, *, width: int = 1280, height: int = 720, seconds: float = 2.0, fps: int = 24,
                    rows: int = 4, columns: int = 6) -> Path:
    """Write an H.264 MP4 of a crowd: ``rows`` x ``columns`` panes, each the astronaut photo drifting
    at its own phase, so every frame holds that many real faces (a classroom, an audience)."""
    photo = astronaut()
    pane_w, pane_h = width // columns, height // rows

    def frames() -> Iterator[np.ndarray]:
        for index in range(int(round(seconds * fps))):
            image = np.zeros((height, width, 3), np.uint8)
            for pane in range(rows * columns):
                top, left = (pane // columns) * pane_h, (pane % columns) * pane_w
                progress = (index / fps / 8.0 + pane / (rows * columns)) % 1.0
                image[top:top + pane_h, left:left + pane_w] = _view(photo, progress, pane_w, pane_h)
            yield image

    return _write_mp4(path, frames(), width=width, height=height, fps=fps, options={})
