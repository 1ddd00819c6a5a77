"""The Ray side of batch mode: model actors sized to the cluster, and the per-segment decode task.

Decoding runs in CPU tasks wherever CPUs are; each task sends batches of frames, already resized
to the detector input by swscale, to a ``FaceDetector`` actor, crops the faces from the
full-resolution frame and sends only the crops to an ``EmotionClassifier`` actor. Two detector
calls per task are in flight so decoding overlaps detection; the actors batch whatever segments
send them, so a GPU stays busy.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray

from jobs import storage
from jobs.plan import Segment
from jobs.spec import RunOptions
from models import EmotionClassifier, FaceDetector
from models.checkpoint import Preprocess
from models.emotion.crop import crop_faces
from pipeline.results import SegmentResult
from pipeline.sources.file import DecodedFrame, VideoInfo, iter_frames

IN_FLIGHT_PER_SEGMENT = 2
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
    def for_cluster(cls, resources: dict, node_cpus: list[float] | None = None) -> "ClusterPlan":
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


def start_actors(options: RunOptions, plan: ClusterPlan) -> tuple[list, ray.actor.ActorHandle]:
    """Detector actors (as many as the plan says) and one classifier actor, with the job's weights.

    The actors hold no state but their weights, so Ray restarts one lost with its node on another
    node and retries the calls that were in flight (``ACTOR_FAULT_TOLERANCE``); detectors are
    spread over the nodes.
    """
    device = options.device
    detectors = [
        ray.remote(FaceDetector).options(
            **plan.detector_resources, **ACTOR_FAULT_TOLERANCE, scheduling_strategy="SPREAD").remote(
            options.detector, device=device, score_threshold=options.score_threshold, det_size=None,
            num_threads=plan.detector_threads,
        )
        for _ in range(plan.detectors)
    ]
    classifier = ray.remote(EmotionClassifier).options(**plan.classifier_resources, **ACTOR_FAULT_TOLERANCE).remote(
        options.emotion_model, device=device, num_threads=1
    )
    return detectors, classifier


def detector_input_size(info: VideoInfo, det_size: int | None) -> tuple[int, int]:
    """(width, height) frames are resized to before detection: longer side ``det_size``, aspect kept."""
    if det_size is None:
        return info.width, info.height
    scale = det_size / max(info.width, info.height)
    return max(1, round(info.width * scale)), max(1, round(info.height * scale))


@ray.remote(max_retries=3, scheduling_strategy="SPREAD")  # retried when its node is lost; over every node with CPUs
@storage.with_local_input  # an object-store URI is read from this node's copy
def process_segment(
    path: str,
    info: VideoInfo,
    segment: Segment,
    options: RunOptions,
    detector: ray.actor.ActorHandle,
    classifier: ray.actor.ActorHandle,
    preprocess: dict,
    num_labels: int,
) -> SegmentResult:
    """Decode one segment, detect and classify its faces; returns its rows in frame order."""
    crop_spec = Preprocess.from_dict(preprocess)
    det_w, det_h = detector_input_size(info, options.det_size)
    scale = np.array([info.width / det_w, info.height / det_h] * 2, np.float32)
    frames = iter_frames(path, start_time=segment.start_time, end_time=segment.end_time,
                         first_index=segment.first_index, sample_fps=options.fps)
    parts: list[SegmentResult] = []
    pending: deque = deque()

    def finish(batch: list[DecodedFrame], reference: ray.ObjectRef) -> None:
        detections = ray.get(reference)
        boxes = [d.xyxy * scale for d in detections]
        keep = [d.side * min(scale[0], scale[1]) >= options.min_face for d in detections]
        crops = [
            crop_faces(frame.to_gray(info.rotation) if crop_spec.channels == 1 else frame.to_rgb(info.rotation),
                       xyxy[mask], crop_spec)
            for frame, xyxy, mask in zip(batch, boxes, keep) if mask.any()
        ]
        probabilities = (ray.get(classifier.__call__.remote(np.concatenate(crops))) if crops
                         else np.zeros((0, num_labels), np.float32))
        counts = [int(mask.sum()) for mask in keep]
        parts.append(SegmentResult(
            frame_index=np.array([f.index for f in batch], np.int64),
            pts_time=np.array([f.pts_time for f in batch], np.float64),
            face_frame=np.repeat([f.index for f in batch], counts).astype(np.int64),
            xyxy=np.concatenate([b[m] for b, m in zip(boxes, keep)]).astype(np.float32),
            det_score=np.concatenate([d.confidence[m] for d, m in zip(detections, keep)]),
            landmarks=np.concatenate([d.landmarks[m] * scale[:2] for d, m in zip(detections, keep)]).astype(np.float32),
            probabilities=probabilities,
        ))

    try:
        while batch := list(itertools.islice(frames, options.batch_size)):
            small = np.stack([frame.to_rgb(info.rotation, (det_w, det_h)) for frame in batch])
            pending.append((batch, detector.__call__.remote(small)))
            if len(pending) >= IN_FLIGHT_PER_SEGMENT:
                finish(*pending.popleft())
        while pending:
            finish(*pending.popleft())
    finally:
        frames.close()
    return SegmentResult.concatenate(parts, num_labels)


@ray.remote(num_cpus=0.25)
@storage.with_local_input
def inspect_video(path: str, segment_seconds: float) -> tuple[VideoInfo, list[Segment]]:
    """Probe a file and plan its segments (on a worker: long files are demuxed once to find keyframes)."""
    from jobs.plan import plan_segments
    from pipeline.sources.file import probe

    info = probe(path)
    return info, plan_segments(Path(path), info, segment_seconds=segment_seconds)

