"""An emotion CNN with its input normalization, mirror pass and softmax, as one graph: what the torch
and ONNX backends run."""

from __future__ import annotations

import numpy as np
import torch

from models.checkpoint import Preprocess
from models.emotion.archs import build as build_network


class ClassifierGraph(torch.nn.Module):
    """uint8 crops at the input size, (n, s, s) gray or (n, s, s, 3) RGB -> (n, classes) probabilities.

    ``temperature`` divides the logits before the softmax (``models.calibration``; 1 leaves them as trained).
    """

    def __init__(self, network: torch.nn.Module, preprocess: Preprocess, temperature: float = 1.0) -> None:
        super().__init__()
        self.network, self.preprocess = network, preprocess
        self.register_buffer("temperature", torch.tensor(float(temperature)))  # follows the network's dtype and device
        zooms = [zoom_matrix(preprocess.input_size, scale) for scale in preprocess.test_scales if scale != 1.0]
        self.register_buffer("zooms", torch.from_numpy(np.stack(zooms)) if zooms else torch.zeros(0))
        self.keep_unzoomed = 1.0 in preprocess.test_scales

    def logits(self, crops: torch.Tensor) -> torch.Tensor:
        """(views, n, classes) float32 logits: the crops at each of ``test_scales``, and their mirror images
        when ``mirror_average``; an ensemble's members each add theirs (members x views)."""
        planes = crops[:, None] if self.preprocess.channels == 1 else crops.permute(0, 3, 1, 2)
        batch = (planes.to(self.temperature.dtype) / 255.0 - self.preprocess.mean) / self.preprocess.std
        views = [batch] if self.keep_unzoomed else []
        views += [zoom @ batch @ zoom.T for zoom in self.zooms]  # separable bilinear resampling, as two products
        batch = torch.cat(views) if len(views) > 1 else views[0]
        if self.preprocess.mirror_average:
            batch = torch.cat([batch, batch.flip(-1)])
        logits = self.network(batch).float()
        return logits.reshape(-1, crops.shape[0], logits.shape[-1])

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return (self.logits(crops) / self.temperature.float()).softmax(dim=-1).mean(dim=0)


def zoom_matrix(size: int, scale: float) -> np.ndarray:
    """(size, size) float32 ``M`` with ``M @ image @ M.T`` the square image zoomed by ``scale`` about its
    center, bilinear, edges repeated: what ``grid_sample`` gives for that affine grid, as a product that any
    backend runs fast."""
    centers = (np.arange(size) + 0.5) / size * 2 - 1  # output pixel centers in [-1, 1]
    source = np.clip(((centers / scale) + 1) * size / 2 - 0.5, 0, size - 1)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, size - 1)
    weight = (source - low).astype(np.float32)
    matrix = np.zeros((size, size), np.float32)
    np.add.at(matrix, (np.arange(size), low), 1 - weight)
    np.add.at(matrix, (np.arange(size), high), weight)
    return matrix


def build(payload: dict) -> tuple[ClassifierGraph, torch.Tensor]:
    """An emotion checkpoint -> its graph and an example input (any batch size will do)."""
    preprocess = Preprocess.from_dict(payload["preprocess"])
    network = build_network(payload["arch"], **payload["arch_kwargs"])
    network.load_state_dict(payload["state_dict"])
    size = preprocess.input_size
    shape = (2, size, size) if preprocess.channels == 1 else (2, size, size, 3)
    return ClassifierGraph(network, preprocess, payload.get("temperature", 1.0)), torch.zeros(shape, dtype=torch.uint8)


def checkpoint_logits(payload: dict, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """(views, n, classes) logits of an emotion checkpoint on uint8 images at its input size: what a
    temperature is fitted on, and what a teacher's probabilities are made of."""
    graph, _ = build(payload)
    graph.eval()
    with torch.inference_mode():
        parts = [graph.logits(torch.from_numpy(images[start:start + batch_size]))
                 for start in range(0, len(images), batch_size)]
    return torch.cat(parts, dim=1).numpy()
