"""The models run unchanged in a Ray actor and give the in-process results."""

from __future__ import annotations

import numpy as np

from jobs.spec import ModelOptions
from pipeline.cluster_models import ActorModels, ClusterPlan
from tests.conftest import read_rgb


def test_the_model_actor_matches_the_models_in_process(local_ray, detector, classifier):
    photo = np.ascontiguousarray(read_rgb("photos/multi_face.jpg")[:480, :640])  # at the detector size
    remote = ActorModels.start(ModelOptions(device="cpu", emotion_model="mini-xception"),
                               ClusterPlan.for_cluster({"CPU": 2}))
    try:
        found = remote.detect(np.stack([photo])).result()[0]
        expected = detector([photo])[0]
        np.testing.assert_allclose(found.xyxy, expected.xyxy, atol=1e-3)
        crops = classifier.crop(photo, found.xyxy)
        np.testing.assert_allclose(remote.classify(crops), classifier(crops), atol=1e-5)
        ids = remote.model_ids()
        assert {k: ids[k] for k in ("detector", "emotion_model")} == {"detector": detector.model_id,
                                                                      "emotion_model": classifier.model_id}
        assert ids["face_embedding"].startswith("dlib-resnet-v1@")  # persons are on by default
    finally:
        remote.close()
