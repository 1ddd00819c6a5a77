"""The models on a cluster (``pipeline.cluster_models``): the plan that sizes actors and decoding to the
cluster, and a model actor that gives the in-process results."""

from __future__ import annotations

import numpy as np
import pytest

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


@pytest.mark.parametrize("resources, nodes, expected", [
    # a 2-core laptop: one model actor on one CPU with both threads, half-CPU decode tasks, one segment at a time
    ({"CPU": 2}, [2], dict(actors=1, actor_threads=2, segment_cpus=0.5, max_segments_in_flight=1)),
    # a 16-core machine: two actors of 7 threads, a CPU per decode task, the rest decoding
    ({"CPU": 16}, [16], dict(actors=2, actor_threads=7, segment_cpus=1.0, max_segments_in_flight=2)),
    # four 4-core nodes: an actor never asks for more than one node has (4, not 7), the other CPUs decode
    ({"CPU": 16}, [4, 4, 4, 4], dict(actors=2, actor_threads=4, segment_cpus=1.0, max_segments_in_flight=7)),
    # ten 2-core nodes: actors fit a node (2 threads), every free CPU decodes
    ({"CPU": 20}, [2] * 10, dict(actors=2, actor_threads=2, segment_cpus=1.0, max_segments_in_flight=15)),
    # GPUs: one actor per GPU, the CPUs decode
    ({"CPU": 16, "GPU": 2}, [16], dict(actors=2, actor_threads=2, segment_cpus=1.0, max_segments_in_flight=14)),
])
def test_the_cluster_plan_sizes_actors_and_decoding_to_the_cluster(resources, nodes, expected):
    plan = ClusterPlan.for_cluster(resources, nodes)
    assert {name: getattr(plan, name) for name in expected} == expected
    assert plan.actor_resources.get("num_cpus", 0) <= max(nodes)
    assert plan.actor_resources.get("num_gpus", 0) == (1 if "GPU" in resources else 0)
