"""dlib's face-recognition ResNet as a torch module, its weights read from dlib's own ``.dat`` file.

dlib runs this network at ~75 ms of CPU a face here (its wheel has no BLAS); the same arithmetic in
onnxruntime takes ~5-7 ms, with descriptors equal to dlib's within 1e-6. The architecture is dlib's
``dnn_face_recognition_ex.cpp``: a 7x7/2 convolution, a 3x3/2 max pool, 14 residual blocks of two 3x3
convolutions (32, 64, 128, 256, 256 filters; the first block of each level after the first halves the size,
its shortcut average-pooled), the mean over the picture and a 256x128 matrix. Batch norms are frozen as
per-channel scale and shift ("affine" layers). Where a shortcut and a block's output differ in channels or
size, dlib adds them zero-padded to the larger (``add_prev``), and so does this module.

The ``.dat`` file is dlib's serialization: integers as a byte (length, sign) then little-endian bytes,
strings as length and bytes, tensors as a version (2), four dimensions and raw little-endian float32. Only
the parameter tensors are taken, in the order they are stored (input to output); the layer names and the
hyper-parameters stored beside them check that the file is the network this module builds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

INPUT_SIZE = 150
MEAN_RGB = (122.782, 117.001, 104.298)  # dlib's input_rgb_image_sized: (pixel - mean) / 256
SCALE = 256.0
LEVELS = ((32, 3), (64, 4), (128, 3), (256, 3), (256, 1))  # (filters, residual blocks), input to output
_LAYER_NAMES = (b"con_", b"affine_", b"fc_", b"relu_", b"max_pool_", b"avg_pool_", b"add_prev_")


@dataclass
class DlibLayer:
    """A layer with parameters: kind ``con``, ``affine`` or ``fc``, its flat parameters and its settings."""

    kind: str
    params: np.ndarray
    settings: tuple[int, ...]  # con: filters, rows, columns, stride y, x, padding y, x; fc: outputs, inputs


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def integer(self) -> int:
        control = self.data[self.at]
        size = control & 0x0F
        value = int.from_bytes(self.data[self.at + 1:self.at + 1 + size], "little")
        self.at += 1 + size
        return -value if control & 0x80 else value

    def string(self) -> str:
        size = self.integer()
        self.at += size
        return self.data[self.at - size:self.at].decode("latin-1")

    def tensor(self) -> np.ndarray:
        if (version := self.integer()) != 2:
            raise ValueError(f"tensor of version {version}, expected 2")
        count = int(np.prod([self.integer() for _ in range(4)]))
        values = np.frombuffer(self.data, "<f4", count, self.at)
        self.at += 4 * count
        return values

    def next_layer(self) -> str | None:
        """Skip to the next layer's name (hyper-parameters between layers are not needed) and read it."""
        found = [at for name in _LAYER_NAMES if (at := self.data.find(name, self.at)) >= 0]
        if not found:
            return None
        self.at = min(found) - 2  # the name's length: one control byte and one byte
        return self.string()


def read_layers(data: bytes) -> list[DlibLayer]:
    """The parameter layers of a serialized dlib network, input to output.

    Raises:
        ValueError: the bytes are not a dlib network of that kind (the caller names the file).
    """
    reader = _Reader(data)
    if reader.integer() != 1 or not reader.string().startswith("loss_metric"):
        raise ValueError("not a dlib metric-learning network (no loss_metric header)")
    layers = []
    while (name := reader.next_layer()) is not None:
        if name.startswith("con_"):
            params = reader.tensor()
            layers.append(DlibLayer("con", params, tuple(reader.integer() for _ in range(7))))
        elif name.startswith("affine_"):
            layers.append(DlibLayer("affine", reader.tensor(), ()))
        elif name.startswith("fc_"):
            settings = (reader.integer(), reader.integer())
            layers.append(DlibLayer("fc", reader.tensor(), settings))
    return layers


class _Affine(nn.Module):
    """A frozen batch norm: per-channel scale and shift."""

    def __init__(self, layer: DlibLayer, channels: int) -> None:
        super().__init__()
        if layer.kind != "affine" or layer.params.size != 2 * channels:
            raise ValueError(f"expected an affine layer of {channels} channels, got {layer.kind} of {layer.params.size // 2}")
        self.register_buffer("scale", torch.tensor(layer.params[:channels].copy()).view(1, -1, 1, 1))
        self.register_buffer("shift", torch.tensor(layer.params[channels:].copy()).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def _conv(layer: DlibLayer, inputs: int, filters: int, kernel: int, stride: int) -> nn.Conv2d:
    count, rows, cols, stride_y, stride_x, pad_y, pad_x = layer.settings
    if layer.kind != "con" or (count, rows, cols, stride_y, stride_x) != (filters, kernel, kernel, stride, stride):
        raise ValueError(f"expected a {kernel}x{kernel}/{stride} convolution of {filters} filters, got {layer.kind} "
                         f"{layer.settings}")
    conv = nn.Conv2d(inputs, filters, kernel, stride, (pad_y, pad_x))
    weights = filters * inputs * kernel * kernel
    if layer.params.size != weights + filters:
        raise ValueError(f"convolution of {filters} filters over {inputs} channels: {layer.params.size} parameters")
    conv.weight.data = torch.tensor(layer.params[:weights].reshape(filters, inputs, kernel, kernel).copy())
    conv.bias.data = torch.tensor(layer.params[weights:].copy())
    return conv


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the sum where both exist, each zero-padded (channels, rows, columns) to the larger."""
    grow = [b.shape[i] - a.shape[i] for i in (3, 2, 1)]
    if any(grow):
        a = F.pad(a, [0, max(grow[0], 0), 0, max(grow[1], 0), 0, max(grow[2], 0)])
        b = F.pad(b, [0, max(-grow[0], 0), 0, max(-grow[1], 0), 0, max(-grow[2], 0)])
    return a + b


class _Block(nn.Module):
    def __init__(self, layers: list[DlibLayer], inputs: int, filters: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1, self.affine1 = _conv(layers[0], inputs, filters, 3, 2 if down else 1), _Affine(layers[1], filters)
        self.conv2, self.affine2 = _conv(layers[2], filters, filters, 3, 1), _Affine(layers[3], filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(torch.relu(self.affine1(self.conv1(x)))))
        return torch.relu(_add_padded(F.avg_pool2d(x, 2, 2) if self.down else x, y))


class DlibFaceResNet(nn.Module):
    """(n, 150, 150, 3) uint8 RGB chips aligned as dlib aligns them -> (n, 128) float32 face descriptors."""

    def __init__(self, layers: list[DlibLayer]) -> None:
        super().__init__()
        expected = 2 + 4 * sum(blocks for _, blocks in LEVELS) + 1
        if len(layers) != expected:
            raise ValueError(f"expected {expected} parameter layers (dlib's face ResNet), found {len(layers)}")
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1))
        self.stem, self.stem_affine = _conv(layers[0], 3, 32, 7, 2), _Affine(layers[1], 32)
        blocks, at, inputs = [], 2, 32
        for level, (filters, count) in enumerate(LEVELS):
            for i in range(count):
                blocks.append(_Block(layers[at:at + 4], inputs, filters, down=level > 0 and i == 0))
                at, inputs = at + 4, filters
        self.blocks = nn.Sequential(*blocks)
        fc = layers[at]
        if fc.kind != "fc" or fc.settings != (128, 256):
            raise ValueError(f"expected a 256x128 fully connected layer last, got {fc.kind} {fc.settings}")
        self.register_buffer("projection", torch.tensor(fc.params.reshape(256, 128).copy()))

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = (chips.permute(0, 3, 1, 2).to(self.mean.dtype) - self.mean) / SCALE  # float16 too, on a GPU
        x = F.max_pool2d(torch.relu(self.stem_affine(self.stem(x))), 3, 2)
        return self.blocks(x).mean(dim=(2, 3)) @ self.projection
