"""The models as the face step sees them (``Models``), and ``LocalModels``, which holds them in this process.

The face step (``pipeline.faces``) calls ``detect`` and ``classify``, the persons stage ``embed`` (when
persons are followed), without knowing where the models run: ``LocalModels`` holds them in this process
(live mode, the bench: no hop between processes); ``pipeline.cluster_models.ActorModels`` calls Ray actors
(batch mode; live mode with ``--address``). ``detect`` returns a pending result, so a caller can keep
several detector calls in flight (decoding overlaps detection). Nothing here imports Ray.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Callable, Generic, Protocol, TypeVar

import numpy as np

from jobs.spec import ModelOptions
from models.checkpoint import Preprocess
from models.detections import Detections

T = TypeVar("T")


class Pending(Generic[T]):
    """A result that may still be computing; ``result()`` waits for it."""

    def __init__(self, result: Callable[[], T]) -> None:
        self.result = result


class Models(Protocol):
    """What the face step needs of the models."""

    labels: list[str]
    crop_spec: Preprocess

    def detect(self, images: np.ndarray) -> Pending[list[Detections]]: ...

    def classify(self, crops: np.ndarray) -> np.ndarray: ...

    def embed(self, chips: np.ndarray) -> np.ndarray: ...

    def model_ids(self) -> dict[str, str]: ...

    def close(self) -> None: ...


class LocalModels:
    """The detector and classifier in this process; ``detect`` computes at once.

    Args:
        options: which models, where and how.
        num_threads: CPU threads of each model (None: the engines' defaults).
    """

    def __init__(self, options: ModelOptions, *, num_threads: int | None = None) -> None:
        from models import EmotionClassifier, FaceDetector

        self.detector = FaceDetector(options.detector, device=options.device, score_threshold=options.score_threshold,
                                     det_size=None, backend=options.backend, num_threads=num_threads)
        self.classifier = EmotionClassifier(options.emotion_model, device=options.device, backend=options.backend,
                                            num_threads=num_threads)
        self.embedder = None
        if options.persons != "off":  # the face descriptor that tells persons apart
            from models import FaceEmbedder

            self.embedder = FaceEmbedder(device=options.device, backend=options.backend, num_threads=num_threads)
        self.labels, self.crop_spec = self.classifier.labels, self.classifier.preprocess

    def detect(self, images: np.ndarray) -> Pending[list[Detections]]:
        detections = self.detector(images)
        return Pending(lambda: detections)

    def classify(self, crops: np.ndarray) -> np.ndarray:
        return self.classifier(crops)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        return self.embedder(chips)

    def model_ids(self) -> dict[str, str]:
        ids = {"detector": self.detector.model_id, "emotion_model": self.classifier.model_id}
        return ids | ({"face_embedding": self.embedder.model_id} if self.embedder else {})

    def info(self) -> dict:
        """What a caller in another process needs: labels, the crop preprocessing and the model ids."""
        return {"labels": self.labels, "preprocess": asdict(self.crop_spec), "model_ids": self.model_ids()}

    def close(self) -> None:
        """Nothing to release: the weights go with this object."""
