"""The models as Ray actors sized to the cluster: ``ClusterPlan`` says how many and with what, ``ModelsActor``
holds a ``LocalModels`` in an actor, ``ActorModels`` is the face step's ``Models`` calling one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import psutil
import ray

from jobs.spec import ModelOptions
from models.checkpoint import Preprocess
from models.detections import Detections
from pipeline.inference import LocalModels, Pending

MIN_OBJECT_STORE_BYTES = 256 * 2**20
NATIVE_FRAME_SIDE = 3840  # with --det-size native, frames as large as 4K are sized for
# a model actor lost with its node is restarted elsewhere, and the calls in flight are retried on it
ACTOR_FAULT_TOLERANCE = {"max_restarts": 4, "max_task_retries": -1}


@dataclass(frozen=True)
class ClusterPlan:
    """How many model actors (each holds a detector and a classifier), with which resources and threads,
    and how many segment tasks at once."""

    actors: int
    actor_resources: dict
    actor_threads: int
    segment_cpus: float
    max_segments_in_flight: int
    unit_hosts: int = 1  # processes that finish videos (track, write, publish): ~4,000 frames/s each


    @classmethod
    def for_cluster(cls, resources: dict, node_cpus: list[float] | None = None) -> ClusterPlan:
        """Size actors and tasks to the cluster's CPUs and GPUs (Ray's ``cluster_resources()``).

        One actor per GPU. On a small CPU-only machine the actor gets most cores and decode tasks
        take half a CPU each: with the default one CPU per task the decode stage would starve and
        stall. On a cluster of several nodes (``node_cpus``: the CPUs of each), an actor never asks
        for more CPUs than the largest node has, else it could be placed nowhere, and every node decodes.
        """
        cpus, gpus = float(resources.get("CPU", 1)), int(resources.get("GPU", 0))
        if gpus:
            return cls(gpus, {"num_cpus": 1, "num_gpus": 1}, 2, 1.0, max(2, int(cpus) - gpus), _unit_hosts(gpus))
        largest = max(node_cpus) if node_cpus else cpus
        actors = max(1, int(cpus) // 8)
        threads = max(1, int(cpus) // actors - 1) if cpus > 4 else max(1, int(cpus))
        threads = min(threads, max(1, int(largest) - 1 if largest > 4 else int(largest)))
        actor_cpus = 1.0 if cpus <= 4 else float(threads)
        segment_cpus = 0.5 if cpus <= 4 else 1.0
        free = max(segment_cpus, cpus - actors * actor_cpus - 0.25)
        # on a few cores a second decode task only competes with the models' threads (measured: slower)
        in_flight = actors if cpus <= 4 else max(2, int(free / segment_cpus))
        # but on several nodes each decodes: one segment in flight per node at least (spread by Ray)
        in_flight = max(in_flight, sum(1 for n in node_cpus or () if n >= segment_cpus))
        return cls(actors, {"num_cpus": actor_cpus}, threads, segment_cpus, in_flight, _unit_hosts(actors))


def _unit_hosts(model_actors: int) -> int:
    """One unit host for every two model actors: a host tracks and writes ~4,000 frames/s, a GPU's actor
    detects ~2,000 (an H200, 640x360)."""
    return max(1, math.ceil(model_actors / 2))


def object_store_bytes(options: ModelOptions, cpus: int) -> int:
    """An embedded object store sized to the job: the frames of every detector call that may be in flight
    (two per segment, a segment per CPU at most), four times over, and never more than Ray's default
    (30% of the memory available), which large native frames on many CPUs would otherwise exceed."""
    side = options.det_size or NATIVE_FRAME_SIDE
    frames_in_flight = options.batch_size * 2 * max(1, cpus)
    wanted = max(MIN_OBJECT_STORE_BYTES, 4 * frames_in_flight * side * side * 3)
    return min(wanted, max(MIN_OBJECT_STORE_BYTES, int(0.3 * psutil.virtual_memory().available)))


class ModelsActor:
    """``LocalModels`` in a Ray actor: a segment's detections and its crops go to one process, and the
    models are imported there, so the driver that starts it never loads torch (a second and ~180 MB)."""

    def __init__(self, options: ModelOptions, num_threads: int) -> None:
        self.models = LocalModels(options, num_threads=num_threads)

    def detect(self, images: np.ndarray) -> list[Detections]:
        return self.models.detector(images)

    def classify(self, crops: np.ndarray) -> np.ndarray:
        return self.models.classifier(crops)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        return self.models.embed(chips)

    def info(self) -> dict:
        return self.models.info()


class ActorModels:
    """A ``ModelsActor``, with what its ``info()`` said."""

    def __init__(self, actor: ray.actor.ActorHandle, info: dict) -> None:
        self.actor, self.info = actor, info
        self.labels = list(info["labels"])
        self.crop_spec = Preprocess.from_dict(info["preprocess"])

    @classmethod
    def start(cls, options: ModelOptions, plan: ClusterPlan) -> "ActorModels":
        """Start one actor and wait until its weights are loaded."""
        (actor,) = start_actors(options, plan, count=1)
        return cls(actor, ray.get(actor.info.remote()))

    def on(self, actor: ray.actor.ActorHandle) -> "ActorModels":
        """The same models on another actor (of the same weights)."""
        return ActorModels(actor, self.info)

    def detect(self, images: np.ndarray) -> Pending[list[Detections]]:
        reference = self.actor.detect.remote(images)
        return Pending(lambda: ray.get(reference))

    def classify(self, crops: np.ndarray) -> np.ndarray:
        return ray.get(self.actor.classify.remote(crops))

    def embed(self, chips: np.ndarray) -> np.ndarray:
        return ray.get(self.actor.embed.remote(chips))

    def model_ids(self) -> dict[str, str]:
        return dict(self.info["model_ids"])

    def close(self) -> None:
        """End the actor (it holds CPUs or a GPU until then)."""
        ray.kill(self.actor)


def start_actors(options: ModelOptions, plan: ClusterPlan, *, count: int | None = None) -> list[ray.actor.ActorHandle]:
    """Model actors, as many as the plan says (or ``count``), spread over the nodes.

    The actors hold no state but their weights, so Ray restarts one lost with its node on another
    node and retries the calls that were in flight (``ACTOR_FAULT_TOLERANCE``). Two calls run at
    once, so a segment's crops need not wait behind another's frames. Nothing is waited for:
    ``info.remote()`` tells when the weights are in.
    """
    actor = ray.remote(ModelsActor).options(**plan.actor_resources, **ACTOR_FAULT_TOLERANCE, max_concurrency=2,
                                            scheduling_strategy="SPREAD")
    return [actor.remote(options, plan.actor_threads) for _ in range(count or plan.actors)]
