"""``EmotionClassifier``: batched emotion CNN on face crops, on CPU (onnxruntime) or GPU (torch)."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from models import registry
from models.backend import choose, open_network
from models.checkpoint import Preprocess
from models.detections import Detections
from models.emotion.crop import crop_faces

if TYPE_CHECKING:
    import torch


def _build(payload: dict) -> Any:
    from models.emotion.graph import build

    return build(payload)


def _describe(payload: dict) -> dict:
    return {"labels": list(payload["labels"]), "preprocess": dict(payload["preprocess"]),
            "metrics": dict(payload.get("metrics", {}))}


class EmotionClassifier:
    """Tells which emotion each face shows. Architecture, labels and preprocessing come from the checkpoint.

    Load once, call many times; works in-process and as a Ray actor.
    The crops are small, so a pipeline crops where the frames are (``crop``) and sends only crops here.

    Args:
        weights: a registry name (``emoray models list``) or an emoray emotion checkpoint path.
        device: ``"auto"`` (GPU when there is one), ``"cpu"`` or ``"cuda[:i]"``.
        half: float16 inference; None means on for CUDA, off for CPU.
        num_threads: CPU threads of this process for torch and onnxruntime (None: ``$EMORAY_NUM_THREADS``,
            else their defaults).
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
        self.device, self.backend = choose(device, backend)
        self.half = (self.device.startswith("cuda") if half is None else bool(half)) and self.backend == "torch"
        self.run, meta = open_network(weights, "emotion", device=self.device, backend=self.backend, half=self.half,
                                      num_threads=num_threads, build=_build, describe=_describe,
                                      output_names=("probabilities",), dynamic={0: "batch"})
        self.model_id: str = meta["model_id"]
        self.labels: list[str] = list(meta["labels"])
        self.preprocess = Preprocess.from_dict(meta["preprocess"])
        self.metrics: dict = dict(meta["metrics"])

    def info(self) -> dict:
        """What a remote caller needs: model id, labels and the crop/input preprocessing."""
        return {"model_id": self.model_id, "labels": self.labels, "preprocess": asdict(self.preprocess)}

    def crop(self, frame: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        """Crops of the faces ``xyxy`` (n, 4) in an RGB or gray ``frame``, ready for ``__call__``."""
        return crop_faces(frame, xyxy, self.preprocess)

    def __call__(self, crops: np.ndarray | torch.Tensor) -> np.ndarray:
        """Class probabilities for a batch of face crops.

        Args:
            crops: (n, h, w) gray or (n, h, w, 3) RGB uint8 crops; resized to the model's input size
                when they differ from it.

        Returns:
            (n, len(labels)) float32 probabilities, columns in ``labels`` order.
        """
        crops = crops if isinstance(crops, np.ndarray) else crops.detach().cpu().numpy()
        expected_ndim = 3 if self.preprocess.channels == 1 else 4
        if crops.ndim != expected_ndim:
            kind = "(n, h, w) gray" if expected_ndim == 3 else "(n, h, w, 3) RGB"
            raise ValueError(f"crops must be a {kind} uint8 batch, but got shape {tuple(crops.shape)}")
        if len(crops) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        if crops.dtype != np.uint8:
            raise ValueError(f"crops must be uint8, but got {crops.dtype}")
        size = self.preprocess.input_size
        if tuple(crops.shape[1:3]) != (size, size):
            crops = np.stack([cv2.resize(crop, (size, size)) for crop in crops])
        (probabilities,) = self.run(crops)
        return probabilities.astype(np.float32, copy=False)

    def classify(self, frame: np.ndarray, detections: Detections) -> Detections:
        """Convenience for one frame: crop, classify, and return the detections with emotion scores."""
        return detections.with_emotions(self(self.crop(frame, detections.xyxy)))
