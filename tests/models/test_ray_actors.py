"""The model classes run unchanged as Ray actors and give the in-process results."""

from __future__ import annotations

import numpy as np
import ray

from models import EmotionClassifier, FaceDetector
from tests.conftest import read_rgb


def test_detector_and_classifier_as_ray_actors_match_in_process(local_ray, detector, classifier):
    photo = read_rgb("photos/multi_face.jpg")
    remote_detector = ray.remote(num_cpus=1)(FaceDetector).remote(device="cpu")
    remote_classifier = ray.remote(num_cpus=1)(EmotionClassifier).remote("mini-xception", device="cpu")
    found = ray.get(remote_detector.__call__.remote(np.stack([photo])))[0]
    expected = detector([photo])[0]
    np.testing.assert_allclose(found.xyxy, expected.xyxy, atol=1e-3)
    crops = classifier.crop(photo, found.xyxy)
    np.testing.assert_allclose(ray.get(remote_classifier.__call__.remote(crops)), classifier(crops), atol=1e-5)
