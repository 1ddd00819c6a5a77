"""Which GPU torch sees: imported only where the answer is not plainly the CPU (``models.backend.choose``)."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) picks CUDA when a GPU is visible, else the CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device must be 'cpu' or 'auto' on a machine without a GPU, but got {device!r}")
    return resolved
