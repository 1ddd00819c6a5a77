"""The RetinaFace network (Deng et al., 2019) as laid out by Pytorch_Retinaface.

Module and parameter names follow Pytorch_Retinaface (``body.stage1.0.0``, ``ssh1.conv3X3.0``,
``ClassHead.0.conv1x1``) so its checkpoints map onto this module key by key. BatchNorm layers are
folded into the convolutions when weights are converted (see ``convert.py``): every convolution here
has a bias, and the slots where BatchNorm stood hold ``nn.Identity`` so that indices keep their meaning.
This module is inference-only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class BackboneConfig:
    """Shape of one RetinaFace variant."""

    name: str
    in_channels: tuple[int, int, int]  # channels of the three backbone levels fed to the FPN
    out_channels: int  # FPN/SSH width


BACKBONES: dict[str, BackboneConfig] = {
    "mobilenet0.25": BackboneConfig("mobilenet0.25", (64, 128, 256), 64),
    "resnet50": BackboneConfig("resnet50", (512, 1024, 2048), 256),
}
ANCHORS_PER_LOCATION = 2


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=True)


def conv_bn(in_ch: int, out_ch: int, stride: int = 1, leaky: float = 0.0, kernel: int = 3) -> nn.Sequential:
    """Conv, (folded BatchNorm), LeakyReLU: Pytorch_Retinaface's conv_bn / conv_bn1X1."""
    return nn.Sequential(_conv(in_ch, out_ch, kernel, stride), nn.Identity(), nn.LeakyReLU(leaky))


def conv_bn_no_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(_conv(in_ch, out_ch, 3), nn.Identity())


def conv_dw(in_ch: int, out_ch: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1, each followed by (folded BN) and LeakyReLU."""
    return nn.Sequential(
        _conv(in_ch, in_ch, 3, stride, groups=in_ch), nn.Identity(), nn.LeakyReLU(leaky),
        _conv(in_ch, out_ch, 1), nn.Identity(), nn.LeakyReLU(leaky),
    )


class MobileNetV1(nn.Module):
    """MobileNet-0.25 body; returns the stride 8, 16 and 32 feature maps."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            conv_bn(3, 8, 2, leaky=0.1), conv_dw(8, 16, 1), conv_dw(16, 32, 2),
            conv_dw(32, 32, 1), conv_dw(32, 64, 2), conv_dw(64, 64, 1),
        )
        self.stage2 = nn.Sequential(conv_dw(64, 128, 2), *[conv_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        c5 = self.stage3(c4)
        return [c3, c4, c5]


class Bottleneck(nn.Module):
    """ResNet-50 bottleneck with BatchNorm folded (``bnK`` slots are identities)."""

    def __init__(self, in_ch: int, width: int, stride: int) -> None:
        super().__init__()
        out_ch = width * 4
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=True)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=1, bias=True)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=True), nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        return F.relu(self.conv3(out) + identity)


class ResNet50(nn.Module):
    """torchvision's ResNet-50 layout (keys ``conv1``, ``layer1.0.conv1``...), without the classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        in_ch = 64
        for index, (blocks, width, stride) in enumerate([(3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)], 1):
            layers = []
            for block in range(blocks):
                layers.append(Bottleneck(in_ch, width, stride if block == 0 else 1))
                in_ch = width * 4
            setattr(self, f"layer{index}", nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(F.relu(self.conv1(x)))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c3, c4, c5]


class FPN(nn.Module):
    def __init__(self, in_channels: tuple[int, int, int], out_ch: int) -> None:
        super().__init__()
        leaky = 0.1 if out_ch <= 64 else 0.0
        self.output1 = conv_bn(in_channels[0], out_ch, leaky=leaky, kernel=1)
        self.output2 = conv_bn(in_channels[1], out_ch, leaky=leaky, kernel=1)
        self.output3 = conv_bn(in_channels[2], out_ch, leaky=leaky, kernel=1)
        self.merge1 = conv_bn(out_ch, out_ch, leaky=leaky)
        self.merge2 = conv_bn(out_ch, out_ch, leaky=leaky)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        out1 = self.output1(features[0])
        out2 = self.output2(features[1])
        out3 = self.output3(features[2])
        out2 = self.merge2(out2 + F.interpolate(out3, size=out2.shape[-2:], mode="nearest"))
        out1 = self.merge1(out1 + F.interpolate(out2, size=out1.shape[-2:], mode="nearest"))
        return [out1, out2, out3]


class SSH(nn.Module):
    """Single Stage Headless context module: 3x3, 5x5 and 7x7 receptive fields, concatenated."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        leaky = 0.1 if out_ch <= 64 else 0.0
        self.conv3X3 = conv_bn_no_relu(in_ch, out_ch // 2)
        self.conv5X5_1 = conv_bn(in_ch, out_ch // 4, leaky=leaky)
        self.conv5X5_2 = conv_bn_no_relu(out_ch // 4, out_ch // 4)
        self.conv7X7_2 = conv_bn(out_ch // 4, out_ch // 4, leaky=leaky)
        self.conv7x7_3 = conv_bn_no_relu(out_ch // 4, out_ch // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv3 = self.conv3X3(x)
        conv5_1 = self.conv5X5_1(x)
        conv5 = self.conv5X5_2(conv5_1)
        conv7 = self.conv7x7_3(self.conv7X7_2(conv5_1))
        return F.relu(torch.cat([conv3, conv5, conv7], dim=1))


class Head(nn.Module):
    """1x1 conv predicting ``values`` numbers per anchor, flattened to (N, H*W*anchors, values)."""

    def __init__(self, in_ch: int, values: int) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(in_ch, ANCHORS_PER_LOCATION * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1)
        return out.reshape(out.shape[0], -1, self.values)


class RetinaFace(nn.Module):
    """Input: (N, 3, H, W) BGR minus mean. Output: loc (N, A, 4), conf (N, A, 2) softmaxed, landmarks (N, A, 10)."""

    def __init__(self, backbone: str = "mobilenet0.25") -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, but got {backbone!r}")
        config = BACKBONES[backbone]
        self.backbone = backbone
        self.body = MobileNetV1() if backbone == "mobilenet0.25" else ResNet50()
        self.fpn = FPN(config.in_channels, config.out_channels)
        self.ssh1 = SSH(config.out_channels, config.out_channels)
        self.ssh2 = SSH(config.out_channels, config.out_channels)
        self.ssh3 = SSH(config.out_channels, config.out_channels)
        self.ClassHead = nn.ModuleList([Head(config.out_channels, 2) for _ in range(3)])
        self.BboxHead = nn.ModuleList([Head(config.out_channels, 4) for _ in range(3)])
        self.LandmarkHead = nn.ModuleList([Head(config.out_channels, 10) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pyramid = self.fpn(self.body(x))
        features = [self.ssh1(pyramid[0]), self.ssh2(pyramid[1]), self.ssh3(pyramid[2])]
        loc = torch.cat([head(f) for head, f in zip(self.BboxHead, features)], dim=1)
        conf = torch.cat([head(f) for head, f in zip(self.ClassHead, features)], dim=1)
        landmarks = torch.cat([head(f) for head, f in zip(self.LandmarkHead, features)], dim=1)
        return loc, conf.softmax(dim=-1), landmarks
