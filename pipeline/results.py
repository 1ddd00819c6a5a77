"""What inference produces for a run of consecutive frames of one video, as parallel arrays."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SegmentResult:
    """Per-frame and per-face results of one segment, in frame order.

    Attributes:
        frame_index: (m,) int64 stream index of each processed frame.
        pts_time: (m,) float64 presentation time of each processed frame, seconds.
        face_frame: (n,) int64 frame_index of each face; faces of a frame are contiguous.
        xyxy: (n, 4) float32 boxes in display-oriented frame pixels.
        det_score: (n,) float32.
        landmarks: (n, 5, 2) float32.
        probabilities: (n, k) float32 emotion probabilities, columns in the classifier's label order.
        error: why decoding stopped early (truncated or damaged file), None when the segment is whole.
    """

    frame_index: np.ndarray
    pts_time: np.ndarray
    face_frame: np.ndarray
    xyxy: np.ndarray
    det_score: np.ndarray
    landmarks: np.ndarray
    probabilities: np.ndarray
    error: str | None = field(default=None)

    @classmethod
    def empty(cls, num_labels: int) -> "SegmentResult":
        return cls(
            np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.int64), np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32), np.zeros((0, num_labels), np.float32),
        )

    @classmethod
    def concatenate(cls, parts: list["SegmentResult"], num_labels: int) -> "SegmentResult":
        if not parts:
            return cls.empty(num_labels)
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in (
            "frame_index", "pts_time", "face_frame", "xyxy", "det_score", "landmarks", "probabilities",
        )))
