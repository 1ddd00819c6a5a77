"""Augmentation for small gray faces, on whole batches in torch (no per-image Python loop)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment(batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random flip, rotation (+-12 deg), scale (0.9-1.1), shift (+-8%) and one erased patch per image.

    Args:
        batch: (n, c, h, w) float images, already normalized.
    """
    n, device = batch.shape[0], batch.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=generator).to(device) * (high - low) + low

    angle = uniform(-12, 12) * math.pi / 180
    scale = uniform(0.9, 1.1)
    flip = torch.where(torch.rand(n, generator=generator).to(device) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([
        torch.stack([cos * flip, -sin, uniform(-0.08, 0.08)], dim=1),
        torch.stack([sin * flip, cos, uniform(-0.08, 0.08)], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)
    height, width = batch.shape[-2:]
    size = (uniform(0.1, 0.3) * min(height, width)).long().clamp(min=1)
    top = (torch.rand(n, generator=generator).to(device) * height).long()
    left = (torch.rand(n, generator=generator).to(device) * width).long()
    rows, cols = torch.arange(height, device=device), torch.arange(width, device=device)
    inside = ((rows[None, :, None] >= top[:, None, None]) & (rows[None, :, None] < (top + size)[:, None, None])
              & (cols[None, None, :] >= left[:, None, None]) & (cols[None, None, :] < (left + size)[:, None, None]))
    erase = (torch.rand(n, generator=generator).to(device) < 0.5)[:, None, None] & inside
    return out.masked_fill(erase[:, None], 0.0)
