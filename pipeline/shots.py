"""Shot cuts, found in the decode pass from a 32x18 thumbnail of each processed frame, so that no track spans one.

A hard cut changes the whole picture from one frame to the next. The score of a frame is the mean absolute
difference of its thumbnail and the previous processed frame's in HSV (hue, saturation, value weighed alike):
PySceneDetect's ``ContentDetector`` score, computed on a thumbnail (same value as that detector gives on the
thumbnail, so its default threshold of 27 carries over). A frame scoring ``CUT_THRESHOLD`` or more starts a new
shot. Measured on the shared clips and on clips joined from them with hard cuts (pipeline/shots.py's
section in the persons findings): scores inside shots 7.2 at most at the full frame rate (19 with
``--fps 2``: more motion between processed frames), at cuts 39 at least; every cut found, none false.

The work is split where the frames are:

- a segment task makes each processed frame's signature (``frame_signature``: swscale's area filter straight
  to 32x18, ~0.1 ms a frame at 640x360 and ~0.3 ms at 1920x1080) and scores it against the frame before it
  in the segment (``SegmentShots``); it returns ``ShotSignals``: 4 bytes a frame plus its first and last
  signatures (1,728 bytes each);
- the per-video unit, which receives the segments in order, scores each segment's first frame against the
  previous segment's last one and decides the cuts (``ShotCutter``). Live mode feeds it one frame at a time.

No decision needs a frame ahead, so live mode cuts at once. PySceneDetect itself is not a dependency: 0.7
requires ``opencv-python``, which clashes with the headless OpenCV emoray uses, and its detectors expect one
process to see every frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.sources.file import DecodedFrame, reformat

THUMBNAIL_WH = (32, 18)  # width, height of a frame's signature; 32 x 18 x 3 = 1,728 bytes
CUT_THRESHOLD = 27.0  # ContentDetector's default: measured inside shots <= 19, at cuts >= 39 (module docstring)


def frame_signature(frame: DecodedFrame) -> np.ndarray:
    """(18, 32, 3) uint8 HSV thumbnail of a decoded frame, made by swscale's area filter (no full-size copy).

    The stored orientation is kept: the score compares frames of one video, which all share it.
    """
    width, height = THUMBNAIL_WH
    bgr = reformat(frame.frame, width=width, height=height, format="bgr24", interpolation="AREA").to_ndarray()
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)


def image_signature(rgb: np.ndarray) -> np.ndarray:
    """(18, 32, 3) uint8 HSV thumbnail of an (H, W, 3) uint8 RGB image (e.g. the frame resized for the detector)."""
    small = cv2.resize(rgb, THUMBNAIL_WH, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2HSV)


def content_score(previous: np.ndarray, current: np.ndarray) -> float:
    """How much the picture changed: mean absolute difference of two HSV signatures, averaged over H, S and V."""
    return float(np.abs(current.astype(np.int16) - previous.astype(np.int16)).mean())


@dataclass
class ShotSignals:
    """What a segment tells about shot changes: a score per processed frame and its first and last signatures.

    Attributes:
        frame_index: (m,) int64 stream index of each processed frame, rising.
        pts_time: (m,) float64 its presentation time, seconds.
        score: (m,) float32 ``content_score`` against the processed frame before it; NaN for the first frame
            (its predecessor is in the previous segment).
        first, last: (18, 32, 3) uint8 signatures of the first and last frames; None when m == 0.
    """

    frame_index: np.ndarray
    pts_time: np.ndarray
    score: np.ndarray
    first: np.ndarray | None
    last: np.ndarray | None

    def __len__(self) -> int:
        return len(self.frame_index)


class SegmentShots:
    """Collects the signals of one segment's processed frames, in frame order (in the segment task)."""

    def __init__(self) -> None:
        self._index: list[int] = []
        self._time: list[float] = []
        self._score: list[float] = []
        self._first: np.ndarray | None = None
        self._last: np.ndarray | None = None

    def add(self, index: int, pts_time: float, signature: np.ndarray) -> None:
        """The next processed frame and its signature (``frame_signature`` or ``image_signature``)."""
        self._score.append(np.nan if self._last is None else content_score(self._last, signature))
        self._index.append(index)
        self._time.append(pts_time)
        if self._first is None:
            self._first = signature
        self._last = signature

    def add_frames(self, frames: list[DecodedFrame]) -> None:
        for frame in frames:
            self.add(frame.index, frame.pts_time, frame_signature(frame))

    def result(self) -> ShotSignals:
        return ShotSignals(np.array(self._index, np.int64), np.array(self._time, np.float64),
                           np.array(self._score, np.float32), self._first, self._last)


class ShotCutter:
    """Decides where new shots start, from the ``ShotSignals`` of one video's segments given in order.

    Args:
        threshold: least ``content_score`` of a frame that starts a new shot.
    """

    def __init__(self, threshold: float = CUT_THRESHOLD) -> None:
        self.threshold = threshold
        self._last: np.ndarray | None = None
        self.cut_frames: list[int] = []  # every cut so far: stream index of the first frame of a new shot
        self.cut_times: list[float] = []  # and its presentation time, seconds

    def update(self, signals: ShotSignals) -> np.ndarray:
        """(c,) int64 frame indexes of ``signals`` that start a new shot (the video's first frame does not)."""
        if len(signals) == 0:
            return np.zeros(0, np.int64)
        score = signals.score.copy()
        score[0] = np.nan if self._last is None else content_score(self._last, signals.first)
        self._last = signals.last
        rows = np.flatnonzero(score >= self.threshold)  # NaN compares False: the first frame of a video
        self.cut_frames += signals.frame_index[rows].tolist()
        self.cut_times += signals.pts_time[rows].tolist()
        return signals.frame_index[rows]

    def update_frame(self, index: int, pts_time: float, signature: np.ndarray) -> bool:
        """Live mode: whether this next frame starts a new shot."""
        shots = SegmentShots()
        shots.add(index, pts_time, signature)
        return len(self.update(shots.result())) > 0


def shot_ids(frame_index: np.ndarray, cut_frames: np.ndarray | list[int]) -> np.ndarray:
    """(n,) int64 shot of each frame index: 0 before the first cut, +1 at each cut."""
    return np.searchsorted(np.sort(np.asarray(cut_frames, np.int64)), np.asarray(frame_index, np.int64), side="right")
