"""Decoding of RetinaFace's regression outputs against the anchors (SSD-style, variances 0.1 / 0.2)."""

from __future__ import annotations

import numpy as np

CENTER_VARIANCE = 0.1
SIZE_VARIANCE = 0.2


def decode_boxes(loc: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """(..., A, 4) offsets -> (..., A, 4) boxes as x1, y1, x2, y2 relative to the input size."""
    centers = priors[..., :2] + loc[..., :2] * CENTER_VARIANCE * priors[..., 2:]
    sizes = priors[..., 2:] * np.exp(loc[..., 2:] * SIZE_VARIANCE)
    return np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=-1)


def decode_landmarks(landmarks: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """(..., A, 10) offsets -> (..., A, 5, 2) points (x, y) relative to the input size.

    Points: right eye, left eye, nose, right mouth corner, left mouth corner (subject's right/left).
    """
    offsets = landmarks.reshape(*landmarks.shape[:-1], 5, 2)
    return priors[..., None, :2] + offsets * CENTER_VARIANCE * priors[..., None, 2:]
