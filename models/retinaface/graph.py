"""RetinaFace with its input normalization, as one graph: what the torch and ONNX backends run."""

from __future__ import annotations

import torch

from models.retinaface.network import RetinaFace

BGR_MEAN = (104.0, 117.0, 123.0)  # the mean RetinaFace was trained with, in BGR order


class DetectorGraph(torch.nn.Module):
    """uint8 (N, H, W, 3) RGB frames -> RetinaFace's outputs: the normalization is part of the graph."""

    def __init__(self, network: RetinaFace) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(BGR_MEAN).reshape(1, 3, 1, 1))

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bgr = frames.permute(0, 3, 1, 2).flip(1).to(self.mean.dtype) - self.mean
        return self.network(bgr.contiguous(memory_format=torch.channels_last))


def build(payload: dict) -> tuple[DetectorGraph, torch.Tensor]:
    """A detector checkpoint -> its graph and an example input (any batch, height and width will do)."""
    network = RetinaFace(payload["backbone"])
    network.load_state_dict(payload["state_dict"])
    return DetectorGraph(network), torch.zeros(1, 64, 64, 3, dtype=torch.uint8)
