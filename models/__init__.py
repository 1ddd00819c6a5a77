"""Networks, weights and datasets of emoray: RetinaFace face detection and emotion CNNs."""

from models.classifier import EmotionClassifier
from models.detections import Detections
from models.detector import FaceDetector
from models.errors import EmorayError, WeightsError, WeightsFetchError

__all__ = ["Detections", "EmorayError", "EmotionClassifier", "FaceDetector", "WeightsError", "WeightsFetchError"]
