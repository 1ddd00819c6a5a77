"""Where the models run: in this process, or as Ray actors sized to the cluster; one interface for both.

The face step (``pipeline.faces``) calls ``detect`` and ``classify`` without knowing where the models
run: ``LocalModels`` holds them in this process (live mode, the bench: no hop between processes),
``ActorModels`` calls Ray actors (batch mode; live mode with ``--address``). ``detect`` returns a
pending result, so a caller can keep several detector calls in flight (decoding overlaps detection).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, Protocol, TypeVar

import numpy as np
import ray

from jobs.spec import ModelOptions
from models import EmotionClassifier, FaceDetector
from models.checkpoint import Preprocess
from models.detections import Detections

T = TypeVar("T")
# a model actor lost with its node is restarted elsewhere, and the calls in flight are retried on it
ACTOR_FAULT_TOLERANCE = {"max_restarts": 4, "max_task_retries": -1}


@dataclass(frozen=True)
class ClusterPlan:
    """How many model actors, with which resources, and how many segment tasks at once."""

    detectors: int
    detector_resources: dict
    detector_threads: int
    classifier_resources: dict
    segment_cpus: float
    max_segments_in_flight: int

    @classmethod
    def for_cluster(cls, resources: dict, node_cpus: list[float] | None = None) -> ClusterPlan:
        """Size actors and tasks to the cluster's CPUs and GPUs (Ray's ``cluster_resources()``).

        On a small CPU-only machine the detector gets most cores and decode tasks take half a CPU
        each: with the default one CPU per task the decode stage would starve and stall. On a
        cluster of several nodes (``node_cpus``: the CPUs of each), a detector never asks for more
        CPUs than the largest node has, else it could be placed nowhere, and every node decodes.
        """
        cpus, gpus = float(resources.get("CPU", 1)), int(resources.get("GPU", 0))
        if gpus:
            return cls(gpus, {"num_cpus": 1, "num_gpus": 0.5}, 2, {"num_cpus": 0.5, "num_gpus": 0.5},
                       1.0, max(2, int(cpus) - 2 * gpus))
        largest = max(node_cpus) if node_cpus else cpus
        detectors = max(1, int(cpus) // 8)
        threads = max(1, int(cpus) // detectors - 1) if cpus > 4 else max(1, int(cpus))
        threads = min(threads, max(1, int(largest) - 1 if largest > 4 else int(largest)))
        detector_cpus = 1.0 if cpus <= 4 else float(threads)
        segment_cpus = 0.5 if cpus <= 4 else 1.0
        free = max(segment_cpus, cpus - detectors * detector_cpus - 0.25)
        # on a few cores a second decode task only competes with the detector's threads (measured: slower)
        in_flight = detectors if cpus <= 4 else max(2, int(free / segment_cpus))
        # but on several nodes each decodes: one segment in flight per node at least (spread by Ray)
        in_flight = max(in_flight, sum(1 for n in node_cpus or () if n >= segment_cpus))
        return cls(detectors, {"num_cpus": detector_cpus}, threads, {"num_cpus": 0.25}, segment_cpus, in_flight)


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

    def model_ids(self) -> dict[str, str]: ...

    def close(self) -> None: ...


class LocalModels:
    """The detector and classifier in this process; ``detect`` computes at once."""

    def __init__(self, options: ModelOptions) -> None:
        self.detector = FaceDetector(options.detector, device=options.device, score_threshold=options.score_threshold,
                                     det_size=None, backend=options.backend)
        self.classifier = EmotionClassifier(options.emotion_model, device=options.device, backend=options.backend)
        self.labels, self.crop_spec = self.classifier.labels, self.classifier.preprocess

    def detect(self, images: np.ndarray) -> Pending[list[Detections]]:
        detections = self.detector(images)
        return Pending(lambda: detections)

    def classify(self, crops: np.ndarray) -> np.ndarray:
        return self.classifier(crops)

    def model_ids(self) -> dict[str, str]:
        return {"detector": self.detector.model_id, "emotion_model": self.classifier.model_id}

    def close(self) -> None:
        """Nothing to release: the weights go with this object."""


class ActorModels:
    """A ``FaceDetector`` and an ``EmotionClassifier`` actor, with what their ``info()`` said."""

    def __init__(self, detector: ray.actor.ActorHandle, classifier: ray.actor.ActorHandle, *,
                 detector_info: dict, classifier_info: dict) -> None:
        self.detector, self.classifier = detector, classifier
        self.detector_info, self.classifier_info = detector_info, classifier_info
        self.labels = list(classifier_info["labels"])
        self.crop_spec = Preprocess.from_dict(classifier_info["preprocess"])

    @classmethod
    def start(cls, options: ModelOptions, plan: ClusterPlan, *, detectors: int | None = None) -> "ActorModels":
        """Start the actors and wait until their weights are loaded (the first detector's models)."""
        handles, classifier = start_actors(options, plan, detectors=detectors)
        detector_info, classifier_info = ray.get([handles[0].info.remote(), classifier.info.remote()])
        return cls(handles[0], classifier, detector_info=detector_info, classifier_info=classifier_info)

    def with_detector(self, detector: ray.actor.ActorHandle) -> "ActorModels":
        """The same models, detection on another detector actor (of the same weights)."""
        return ActorModels(detector, self.classifier, detector_info=self.detector_info,
                           classifier_info=self.classifier_info)

    def detect(self, images: np.ndarray) -> Pending[list[Detections]]:
        reference = self.detector.__call__.remote(images)
        return Pending(lambda: ray.get(reference))

    def classify(self, crops: np.ndarray) -> np.ndarray:
        return ray.get(self.classifier.__call__.remote(crops))

    def model_ids(self) -> dict[str, str]:
        return {"detector": self.detector_info["model_id"], "emotion_model": self.classifier_info["model_id"]}

    def close(self) -> None:
        """End the actors (they hold CPUs or a GPU share until then)."""
        for actor in (self.detector, self.classifier):
            ray.kill(actor)


def start_actors(options: ModelOptions, plan: ClusterPlan, *, detectors: int | None = None) -> tuple[list, ray.actor.ActorHandle]:
    """Detector actors (as many as the plan says, or ``detectors``) and one classifier actor.

    The actors hold no state but their weights, so Ray restarts one lost with its node on another
    node and retries the calls that were in flight (``ACTOR_FAULT_TOLERANCE``); detectors are
    spread over the nodes. Nothing is waited for: ``info.remote()`` tells when the weights are in.
    """
    device = options.device
    handles = [
        ray.remote(FaceDetector).options(
            **plan.detector_resources, **ACTOR_FAULT_TOLERANCE, scheduling_strategy="SPREAD").remote(
            options.detector, device=device, score_threshold=options.score_threshold, det_size=None,
            num_threads=plan.detector_threads, backend=options.backend,
        )
        for _ in range(detectors or plan.detectors)
    ]
    classifier = ray.remote(EmotionClassifier).options(**plan.classifier_resources, **ACTOR_FAULT_TOLERANCE).remote(
        options.emotion_model, device=device, num_threads=1, backend=options.backend
    )
    return handles, classifier
