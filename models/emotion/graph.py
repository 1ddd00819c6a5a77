"""An emotion CNN with its input normalization, mirror pass and softmax, as one graph: what the torch
and ONNX backends run."""

from __future__ import annotations

import torch

from models.checkpoint import Preprocess
from models.emotion.archs import build as build_network


class ClassifierGraph(torch.nn.Module):
    """uint8 crops at the input size, (n, s, s) gray or (n, s, s, 3) RGB -> (n, classes) probabilities."""

    def __init__(self, network: torch.nn.Module, preprocess: Preprocess) -> None:
        super().__init__()
        self.network, self.preprocess = network, preprocess
        self.register_buffer("scale", torch.tensor(1.0))  # follows the network's dtype and device

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        planes = crops[:, None] if self.preprocess.channels == 1 else crops.permute(0, 3, 1, 2)
        batch = (planes.to(self.scale.dtype) / 255.0 - self.preprocess.mean) / self.preprocess.std
        if self.preprocess.mirror_average:
            batch = torch.cat([batch, batch.flip(-1)])
        probabilities = self.network(batch).float().softmax(dim=-1)
        if self.preprocess.mirror_average:
            probabilities = probabilities.reshape(2, crops.shape[0], probabilities.shape[-1]).mean(dim=0)
        return probabilities


def build(payload: dict) -> tuple[ClassifierGraph, torch.Tensor]:
    """An emotion checkpoint -> its graph and an example input (any batch size will do)."""
    preprocess = Preprocess.from_dict(payload["preprocess"])
    network = build_network(payload["arch"], **payload["arch_kwargs"])
    network.load_state_dict(payload["state_dict"])
    size = preprocess.input_size
    shape = (2, size, size) if preprocess.channels == 1 else (2, size, size, 3)
    return ClassifierGraph(network, preprocess), torch.zeros(shape, dtype=torch.uint8)
