"""Face crops for emotion classification, made the way the ``fer`` package makes them.

fer squares the detection box around its center, grows it by a 10 px margin, pads the gray frame
with the mean of its bottom two rows where the crop leaves it, and resizes with OpenCV's bilinear
filter. Doing the same here keeps mini-Xception's results comparable with that package.
"""

from __future__ import annotations

import cv2
import numpy as np

from models.checkpoint import Preprocess


def square_boxes(xyxy: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    """(n, 4) boxes -> (n, 4) integer square crop windows (x1, y1, x2, y2), margins included."""
    x, y = np.floor(xyxy[:, 0]), np.floor(xyxy[:, 1])
    width, height = np.floor(xyxy[:, 2] - xyxy[:, 0]), np.floor(xyxy[:, 3] - xyxy[:, 1])
    side = np.maximum(width, height)
    x = x - (side - width) // 2
    y = y - (side - height) // 2
    margin = np.floor(preprocess.margin_px + preprocess.margin_frac * side)
    return np.stack([x - margin, y - margin, x + side + margin, y + side + margin], axis=1).astype(np.int64)


def crop_faces(frame: np.ndarray, xyxy: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    """Crop and resize the faces of one frame.

    Args:
        frame: (H, W, 3) uint8 RGB or (H, W) uint8 gray.
        xyxy: (n, 4) face boxes in pixels of ``frame``.
        preprocess: the classifier's crop and input settings.

    Returns:
        (n, size, size) uint8 gray crops when ``preprocess.channels == 1``, else (n, size, size, 3) RGB.
    """
    size = preprocess.input_size
    if frame.ndim == 3 and preprocess.channels == 1:
        frame = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    elif frame.ndim == 2 and preprocess.channels == 3:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    shape = (len(xyxy), size, size) + (() if preprocess.channels == 1 else (3,))
    crops = np.empty(shape, np.uint8)
    if len(xyxy) == 0:
        return crops
    height, width = frame.shape[:2]
    fill = frame[-2:].reshape(-1, *frame.shape[2:]).mean(axis=0)
    for i, (x1, y1, x2, y2) in enumerate(square_boxes(np.asarray(xyxy, np.float64), preprocess)):
        window = frame[max(y1, 0):min(y2, height), max(x1, 0):min(x2, width)]
        if window.size == 0:
            crops[i] = np.broadcast_to(np.round(fill).astype(np.uint8), crops[i].shape)
            continue
        padding = (max(-y1, 0), max(y2 - height, 0), max(-x1, 0), max(x2 - width, 0))
        if any(padding):
            value = fill.tolist() if np.ndim(fill) else float(fill)
            window = cv2.copyMakeBorder(window, *padding, cv2.BORDER_CONSTANT, value=value)
        crops[i] = cv2.resize(window, (size, size), interpolation=cv2.INTER_LINEAR)
    return crops
