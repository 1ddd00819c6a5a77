"""Networks, weights and datasets of emoray: RetinaFace face detection and emotion CNNs.

The models load lazily: a process that only needs the registry's names or ``Preprocess`` (the job's
driver, decode tasks) never imports torch.
"""

from __future__ import annotations

import importlib

from models.detections import Detections
from models.errors import EmorayError, WeightsError, WeightsFetchError

_LAZY = {"EmotionClassifier": "models.classifier", "FaceDetector": "models.detector", "FaceEmbedder": "models.embedding"}
__all__ = ["Detections", "EmorayError", "EmotionClassifier", "FaceDetector", "FaceEmbedder", "WeightsError",
           "WeightsFetchError"]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
