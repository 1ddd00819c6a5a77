"""Non-maximum suppression in numpy: a face has tens of candidate boxes, so the greedy loop is cheap."""

from __future__ import annotations

import numpy as np


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes -> (N, M)."""
    area_a = np.clip(boxes_a[:, 2] - boxes_a[:, 0], 0, None) * np.clip(boxes_a[:, 3] - boxes_a[:, 1], 0, None)
    area_b = np.clip(boxes_b[:, 2] - boxes_b[:, 0], 0, None) * np.clip(boxes_b[:, 3] - boxes_b[:, 1], 0, None)
    top_left = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS, same result as ``torchvision.ops.nms``: indices kept, by decreasing score.

    Each kept box is compared with the boxes still in play only, never all pairs at once: a network that
    passes thousands of candidates (an untrained one, or ``score_threshold`` near 0) would need an N x N
    matrix (16,800 anchors at 640x640: 1.1 GB and ~17 s a frame)."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, order = order[0], order[1:]
        keep.append(best)
        if order.size:
            order = order[box_iou(boxes[best:best + 1], boxes[order])[0] <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, iou_threshold: float) -> np.ndarray:
    """NMS within each group (e.g. frame of a batch) in one call, by shifting each group's boxes apart."""
    if boxes.size == 0:
        return np.empty(0, dtype=np.int64)
    shift = groups.astype(boxes.dtype) * (boxes.max() - boxes.min() + 1)
    return nms(boxes + shift[:, None], scores, iou_threshold)
