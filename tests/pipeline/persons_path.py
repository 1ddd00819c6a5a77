"""The path after the face step with persons, assembled from the library pieces for tests: segments decoded
and run through the face step (chips made there for ``chip_candidates``), then in frame order shot cuts, the
tracker (a new one at each cut), each track's samples, their embeddings and the persons."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.embedding import FaceEmbedder, face_chips
from pipeline.faces import FaceStep
from pipeline.persons.identity import TrackAppearance
from pipeline.persons.sampling import Sample, TrackSampler, chip_candidates, face_quality
from pipeline.results import FaceBatch
from pipeline.shots import SegmentShots, ShotCutter, ShotSignals
from pipeline.sources.file import iter_frames, probe
from pipeline.track import LOST_SECONDS, FaceTracker


@dataclass
class SegmentOut:
    """What a segment task would return: its faces, its shot signals, and chips of the candidate faces."""

    faces: FaceBatch
    shots: ShotSignals
    quality: np.ndarray
    chips: dict[int, np.ndarray]  # face row -> chip


@dataclass
class PersonsRun:
    faces: FaceBatch  # with track_id
    cut_frames: list[int]
    appearances: list[TrackAppearance]
    spans: dict[int, tuple[float, float]] = field(default_factory=dict)


def run_segment(step: FaceStep, frames: list) -> SegmentOut:
    shots = SegmentShots()
    shots.add_frames(frames)
    faces = FaceBatch.concatenate([step(frames[i:i + 8]) for i in range(0, len(frames), 8)], len(step.models.labels))
    quality = face_quality(faces.det_score, faces.face_px, faces.yaw, faces.pitch, faces.sharpness)
    face_time = faces.pts_time[np.searchsorted(faces.frame_index, faces.face_frame)]
    rows = chip_candidates(face_time, faces.xyxy, quality)
    chips: dict[int, np.ndarray] = {}
    for frame in frames:
        wanted = rows[faces.face_frame[rows] == frame.index]
        if len(wanted):
            chips.update(zip(wanted.tolist(), face_chips(frame.to_rgb(0), faces.landmarks[wanted])))
    return SegmentOut(faces, shots.result(), quality, chips)


def run_persons_path(path: Path, models, embedder: FaceEmbedder, *, segment_frames: int = 40) -> PersonsRun:
    info = probe(path)
    step = FaceStep(models, info, det_size=640)
    frames = list(iter_frames(path))
    cutter, sampler = ShotCutter(), TrackSampler()
    tracker, first_id = FaceTracker(frame_rate=info.fps), 0
    ended: dict[int, list[Sample]] = {}
    spans: dict[int, tuple[float, float]] = {}
    peak: dict[int, float] = {}
    batches = []
    for start in range(0, len(frames), segment_frames):
        out = run_segment(step, frames[start:start + segment_frames])
        faces, cuts = out.faces, set(cutter.update(out.shots).tolist())
        track_id = np.zeros(len(faces), np.int64)
        for frame, time, (begin, end) in zip(faces.frame_index.tolist(), faces.pts_time.tolist(), zip(*faces.face_ranges())):
            if frame in cuts:  # a track never spans a cut: the tracker starts again, ids go on
                ended.update(sampler.close_all())
                first_id, tracker = max(spans, default=-1) + 1, FaceTracker(frame_rate=info.fps)
            track_id[begin:end] = tracker.update(faces.xyxy[begin:end], faces.det_score[begin:end]) + first_id
            for row in range(begin, end):
                track = int(track_id[row])
                spans[track] = (spans.get(track, (time, time))[0], time)
                peak[track] = max(peak.get(track, 0.0), float(faces.det_score[row]))
                if row in out.chips:
                    sampler.offer(track, Sample(time, frame, float(out.quality[row]), out.chips[row]))
                else:
                    sampler.seen(track, time)
            ended.update(sampler.close_stale(time, LOST_SECONDS))
        batches.append(faces.with_tracks(track_id))
    ended.update(sampler.close_all())
    order = sorted(ended)
    chips = [sample.chip for track in order for sample in ended[track]]
    embeddings = embedder(np.stack(chips)) if chips else np.zeros((0, 128), np.float32)
    appearances, at = [], 0
    for track in order:
        samples = ended[track]
        appearances.append(TrackAppearance(track, *spans[track], np.array([s.time for s in samples]),
                                           embeddings[at:at + len(samples)], np.array([s.quality for s in samples]),
                                           peak[track]))
        at += len(samples)
    return PersonsRun(FaceBatch.concatenate(batches, len(models.labels)), cutter.cut_frames, appearances, spans)
