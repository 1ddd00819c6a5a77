"""Anchor boxes (priors) of RetinaFace: two square anchors per location at strides 8, 16 and 32."""

from __future__ import annotations

import math
from functools import lru_cache

import torch

STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))  # anchor side in input pixels, per stride


@lru_cache(maxsize=16)
def _priors_cpu(height: int, width: int) -> torch.Tensor:
    levels = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES):
        rows, cols = math.ceil(height / stride), math.ceil(width / stride)
        cy, cx = torch.meshgrid(
            (torch.arange(rows, dtype=torch.float32) + 0.5) * stride / height,
            (torch.arange(cols, dtype=torch.float32) + 0.5) * stride / width,
            indexing="ij",
        )
        centers = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2).expand(-1, len(sizes), 2)
        wh = torch.tensor([[size / width, size / height] for size in sizes])
        levels.append(torch.cat([centers, wh.expand(centers.shape[0], -1, -1)], dim=-1).reshape(-1, 4))
    return torch.cat(levels)


def priors(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Anchors for an input of (height, width) pixels: (A, 4) as (cx, cy, w, h), relative to the input size.

    Order matches the network's outputs: level by level, row-major over locations, then anchor size.
    """
    return _priors_cpu(height, width).to(device)
