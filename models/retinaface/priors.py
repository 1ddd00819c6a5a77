"""Anchor boxes (priors) of RetinaFace: two square anchors per location at strides 8, 16 and 32."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))  # anchor side in input pixels, per stride


@lru_cache(maxsize=16)
def priors(height: int, width: int) -> np.ndarray:
    """Anchors for an input of (height, width) pixels: (A, 4) float32 as (cx, cy, w, h), relative to the
    input size. Order matches the network's outputs: level by level, row-major over locations, then anchor size.
    Cached: treat as read-only."""
    levels = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES):
        rows, cols = math.ceil(height / stride), math.ceil(width / stride)
        cy, cx = np.meshgrid((np.arange(rows, dtype=np.float32) + 0.5) * stride / height,
                             (np.arange(cols, dtype=np.float32) + 0.5) * stride / width, indexing="ij")
        centers = np.broadcast_to(np.stack([cx, cy], axis=-1).reshape(-1, 1, 2), (rows * cols, len(sizes), 2))
        wh = np.broadcast_to(np.array([[size / width, size / height] for size in sizes], np.float32),
                             (rows * cols, len(sizes), 2))
        levels.append(np.concatenate([centers, wh], axis=-1).reshape(-1, 4))
    anchors = np.concatenate(levels).astype(np.float32)
    anchors.flags.writeable = False
    return anchors
