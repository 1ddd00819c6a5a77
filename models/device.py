"""Where models run: pick the device and precision once, the same way for every model."""

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


def resolve_half(half: bool | None, device: torch.device) -> bool:
    """Half precision defaults to on for CUDA and off for CPU (where float16 convs are slow)."""
    return device.type == "cuda" if half is None else bool(half)
