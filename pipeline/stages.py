"""The Ray tasks of batch mode: probing and planning a video, and decoding a segment through the face step.

Decoding runs in CPU tasks wherever CPUs are; each task runs the face step (``pipeline.faces``) on
batches of frames with the model actors (``pipeline.cluster_models``): frames resized by swscale go to a
``FaceDetector`` actor, only the crops to the ``EmotionClassifier`` actor. Two detector calls per
task are in flight so decoding overlaps detection; the actors batch whatever segments send them,
so a GPU stays busy.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import ray

from jobs import storage
from jobs.spec import RunOptions
from pipeline.faces import FaceStep
from pipeline.cluster_models import ActorModels
from pipeline.results import FaceBatch
from pipeline.shots import SegmentShots, ShotSignals
from pipeline.sources.file import VideoInfo, iter_frames
from pipeline.sources.plan import Segment, plan_segments

IN_FLIGHT_PER_SEGMENT = 2


@dataclass
class SegmentResult:
    """What a segment task hands the video's unit: its faces in frame order (with chips of a few of them
    when persons are followed) and the signals of its shot cuts."""

    faces: FaceBatch
    shots: ShotSignals


@ray.remote(max_retries=3, scheduling_strategy="SPREAD")  # retried when its node is lost; over every node with CPUs
@storage.with_local_input  # an object-store URI is read from this node's copy
def process_segment(path: str, info: VideoInfo, segment: Segment, options: RunOptions, models: ActorModels) -> SegmentResult:
    """Decode one segment and run the face step on it, ``batch_size`` frames a call; note each frame's shot signal."""
    step = FaceStep(models, info, det_size=options.det_size, min_face=options.min_face,
                    chips=options.persons != "off")
    frames = iter_frames(path, start_time=segment.start_time, end_time=segment.end_time,
                         first_index=segment.first_index, sample_fps=options.fps)
    shots = SegmentShots()
    parts: list[FaceBatch] = []
    pending: deque = deque()
    try:
        while batch := list(itertools.islice(frames, options.batch_size)):
            shots.add_frames(batch)
            pending.append(step.submit(batch))
            if len(pending) >= IN_FLIGHT_PER_SEGMENT:
                parts.append(step.finish(pending.popleft()))
        while pending:
            parts.append(step.finish(pending.popleft()))
    finally:
        frames.close()
    return SegmentResult(FaceBatch.concatenate(parts, len(models.labels)), shots.result())


@ray.remote(num_cpus=0.25)
@storage.with_local_input
def inspect_video(path: str, segment_seconds: float) -> tuple[VideoInfo, list[Segment]]:
    """Probe a file and plan its segments (on a worker: long files are demuxed once to find keyframes)."""
    from pipeline.sources.file import probe

    info = probe(path)
    return info, plan_segments(Path(path), info, segment_seconds=segment_seconds)
