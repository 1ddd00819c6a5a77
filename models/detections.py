"""``Detections``: the faces found in one frame, as parallel arrays."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def check_shape(name: str, value: np.ndarray, shape: tuple[int | None, ...]) -> None:
    """Raise ValueError naming the array, the shape wanted (``_`` for any size) and the shape it has."""
    if value.ndim != len(shape) or any(want is not None and got != want for got, want in zip(value.shape, shape)):
        wanted = "(" + ", ".join("_" if want is None else str(want) for want in shape) + ")"
        raise ValueError(f"{name} must be an np.ndarray with shape {wanted}, but got shape {value.shape}")


@dataclass
class Detections:
    """Faces in one frame.

    Attributes:
        xyxy: (n, 4) float32 box corners x1, y1, x2, y2 in pixels of the original frame.
        confidence: (n,) float32 detector score in [0, 1].
        landmarks: (n, 5, 2) float32 (x, y) of right eye, left eye, nose, right and left mouth corner.
        emotion_scores: (n, k) float32 class probabilities, or None before classification.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    landmarks: np.ndarray
    emotion_scores: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        check_shape("xyxy", self.xyxy, (None, 4))
        check_shape("confidence", self.confidence, (n,))
        check_shape("landmarks", self.landmarks, (n, 5, 2))
        if self.emotion_scores is not None:
            check_shape("emotion_scores", self.emotion_scores, (n, None))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: np.ndarray | slice | list[int]) -> "Detections":
        """Select faces by boolean mask, index array or slice."""
        scores = None if self.emotion_scores is None else self.emotion_scores[index]
        return Detections(self.xyxy[index], self.confidence[index], self.landmarks[index], scores)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))

    @property
    def side(self) -> np.ndarray:
        """(n,) shorter box side in pixels (what ``--min-face`` compares against)."""
        return np.minimum(self.xyxy[:, 2] - self.xyxy[:, 0], self.xyxy[:, 3] - self.xyxy[:, 1])

    def with_emotions(self, emotion_scores: np.ndarray) -> "Detections":
        return Detections(self.xyxy, self.confidence, self.landmarks, emotion_scores)
