"""``EmotionClassifier``: batched emotion CNN on face crops, on CPU or GPU."""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict

import cv2
import numpy as np
import torch

from models import registry
from models.checkpoint import Preprocess
from models.detections import Detections
from models.device import resolve_device, resolve_half
from models.emotion.archs import build
from models.emotion.crop import crop_faces


class EmotionClassifier:
    """Tells which emotion each face shows. Architecture, labels and preprocessing come from the checkpoint.

    Load once, call many times; works in-process and as a Ray actor.
    The crops are small, so a pipeline crops where the frames are (``crop``) and sends only crops here.

    Args:
        weights: a registry name (``emoray models list``) or an emoray emotion checkpoint path.
        device: ``"auto"`` (GPU when there is one), ``"cpu"`` or ``"cuda[:i]"``.
        half: float16 inference; None means on for CUDA, off for CPU.
        num_threads: torch CPU threads of this process (None leaves torch's default).
    """

    def __init__(
        self,
        weights: str | os.PathLike = registry.DEFAULT_EMOTION_MODEL,
        *,
        device: str | torch.device | None = "auto",
        half: bool | None = None,
        num_threads: int | None = None,
    ) -> None:
        if num_threads:
            torch.set_num_threads(num_threads)
        payload, self.model_id = registry.resolve(weights, "emotion")
        self.labels: list[str] = list(payload["labels"])
        self.preprocess = Preprocess.from_dict(payload["preprocess"])
        self.metrics: dict = dict(payload.get("metrics", {}))
        self.device = resolve_device(device)
        self.half = resolve_half(half, self.device)
        self.network = build(payload["arch"], **payload["arch_kwargs"])
        self.network.load_state_dict(payload["state_dict"])
        self.network.eval().to(self.device)
        if self.half:
            self.network.half()

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
        batch = crops.to(self.device)
        batch = batch[:, None] if batch.ndim == 3 else batch.permute(0, 3, 1, 2)
        batch = (batch.float() / 255.0 - self.preprocess.mean) / self.preprocess.std
        if self.preprocess.mirror_average:
            batch = torch.cat([batch, batch.flip(-1)])
        probabilities = self.network(batch.half() if self.half else batch).float().softmax(dim=-1)
        if self.preprocess.mirror_average:
            probabilities = probabilities.view(2, -1, probabilities.shape[-1]).mean(dim=0)
        return probabilities.cpu().numpy()

    def classify(self, frame: np.ndarray, detections: Detections) -> Detections:
        """Convenience for one frame: crop, classify, and return the detections with emotion scores."""
        return detections.with_emotions(self(self.crop(frame, detections.xyxy)))
