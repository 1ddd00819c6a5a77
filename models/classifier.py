"""``EmotionClassifier``: batched emotion CNN on face crops, on CPU (onnxruntime) or GPU (torch)."""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict

import cv2
import numpy as np
import torch

from models import registry
from models.backend import OnnxRunner, TorchRunner, resolve_backend
from models.checkpoint import Preprocess
from models.detections import Detections
from models.device import resolve_device, resolve_half
from models.emotion.archs import build
from models.emotion.crop import crop_faces


class ClassifierGraph(torch.nn.Module):
    """uint8 crops at the input size, (n, s, s) gray or (n, s, s, 3) RGB -> (n, classes) probabilities.

    Normalization, the mirror pass and the softmax are part of the graph, so an ONNX export holds them.
    """

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


class EmotionClassifier:
    """Tells which emotion each face shows. Architecture, labels and preprocessing come from the checkpoint.

    Load once, call many times; works in-process and as a Ray actor.
    The crops are small, so a pipeline crops where the frames are (``crop``) and sends only crops here.

    Args:
        weights: a registry name (``emoray models list``) or an emoray emotion checkpoint path.
        device: ``"auto"`` (GPU when there is one), ``"cpu"`` or ``"cuda[:i]"``.
        half: float16 inference; None means on for CUDA, off for CPU.
        num_threads: CPU threads of this process for torch and onnxruntime (None leaves their defaults).
        backend: ``"auto"`` (onnxruntime on a CPU, torch on a GPU), ``"torch"`` or ``"onnx"``; part of
            ``model_id``.
    """

    def __init__(
        self,
        weights: str | os.PathLike = registry.DEFAULT_EMOTION_MODEL,
        *,
        device: str | torch.device | None = "auto",
        half: bool | None = None,
        num_threads: int | None = None,
        backend: str = "auto",
    ) -> None:
        if num_threads:
            torch.set_num_threads(num_threads)
        payload, weights_id = registry.resolve(weights, "emotion")
        self.labels: list[str] = list(payload["labels"])
        self.preprocess = Preprocess.from_dict(payload["preprocess"])
        self.metrics: dict = dict(payload.get("metrics", {}))
        self.device = resolve_device(device)
        self.backend = resolve_backend(backend, self.device)
        self.half = resolve_half(half, self.device) and self.backend == "torch"
        self.model_id = f"{weights_id}+{self.backend}"
        network = build(payload["arch"], **payload["arch_kwargs"])
        network.load_state_dict(payload["state_dict"])
        graph = ClassifierGraph(network, self.preprocess)
        size, channels = self.preprocess.input_size, self.preprocess.channels
        if self.backend == "onnx":
            example = torch.zeros((2, size, size) if channels == 1 else (2, size, size, 3), dtype=torch.uint8)
            self.run = OnnxRunner(graph, example, model_id=weights_id, variant=asdict(self.preprocess),
                                  output_names=("probabilities",), dynamic={0: "batch"}, num_threads=num_threads)
        else:
            self.run = TorchRunner(graph, self.device, half=self.half)

    def info(self) -> dict:
        """What a remote caller needs: model id, labels and the crop/input preprocessing."""
        return {"model_id": self.model_id, "labels": self.labels, "preprocess": asdict(self.preprocess)}

    def crop(self, frame: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        """Crops of the faces ``xyxy`` (n, 4) in an RGB or gray ``frame``, ready for ``__call__``."""
        return crop_faces(frame, xyxy, self.preprocess)

    @torch.inference_mode()
    def __call__(self, crops: np.ndarray | torch.Tensor) -> np.ndarray:
        """Class probabilities for a batch of face crops.

        Args:
            crops: (n, h, w) gray or (n, h, w, 3) RGB uint8 crops; resized to the model's input size
                when they differ from it.

        Returns:
            (n, len(labels)) float32 probabilities, columns in ``labels`` order.
        """
        with warnings.catch_warnings():  # read-only arrays (e.g. from Ray's object store) are only read here
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            crops = torch.as_tensor(crops)
        expected_ndim = 3 if self.preprocess.channels == 1 else 4
        if crops.ndim != expected_ndim:
            kind = "(n, h, w) gray" if expected_ndim == 3 else "(n, h, w, 3) RGB"
            raise ValueError(f"crops must be a {kind} uint8 batch, but got shape {tuple(crops.shape)}")
        if len(crops) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        size = self.preprocess.input_size
        if tuple(crops.shape[1:3]) != (size, size):
            crops = torch.from_numpy(np.stack([cv2.resize(c, (size, size)) for c in crops.numpy()]))
        if crops.dtype != torch.uint8:
            raise ValueError(f"crops must be uint8, but got {crops.dtype}")
        (probabilities,) = self.run(crops.to(self.device))
        return probabilities.float().cpu().numpy()

    def classify(self, frame: np.ndarray, detections: Detections) -> Detections:
        """Convenience for one frame: crop, classify, and return the detections with emotion scores."""
        return detections.with_emotions(self(self.crop(frame, detections.xyxy)))
