"""Per-track answers from per-frame faces: track summaries and episodes, kept as running totals.

Both are functions of a video's (or live session's) tracked, smoothed faces alone, fed in frame order, so a
resumed or re-run job, live mode and anyone holding the faces table get the same answers; the totals never
hold the rows, so their cost per frame does not grow with the length of a video or session.

- **Episodes** are stretches of one track in one smoothed emotion lasting at least ``min_seconds``
  (first to last frame); they never overlap and lie inside their track.
- **Tracks**: span, frames, dominant emotion (the largest share of smoothed time), mean raw
  probabilities, share of each smoothed emotion, and the best face (largest area times detector score).
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field

import numpy as np
import pyarrow as pa

from pipeline.results import FaceBatch

BOX = ("x1", "y1", "x2", "y2")


@dataclass
class _Run:
    """A stretch of one track in one smoothed emotion, as far as it has been seen."""

    label: int
    start_frame: int
    start_time: float
    end_frame: int = 0
    end_time: float = 0.0
    score_sum: float = 0.0
    count: int = 0
    peak_score: float = -1.0
    peak_frame: int = 0

    def extend(self, frames: np.ndarray, times: np.ndarray, scores: np.ndarray) -> None:
        self.end_frame, self.end_time = int(frames[-1]), float(times[-1])
        self.score_sum += float(scores.sum(dtype=np.float64))
        self.count += len(scores)
        peak = int(np.argmax(scores))
        if scores[peak] > self.peak_score:  # the first frame of the highest score
            self.peak_score, self.peak_frame = float(scores[peak]), int(frames[peak])

    def episode(self, track_id: int, labels: list[str]) -> dict:
        return {"track_id": track_id, "emotion": labels[self.label], "start_frame": self.start_frame,
                "end_frame": self.end_frame, "start_time": self.start_time, "end_time": self.end_time,
                "duration_s": self.end_time - self.start_time, "mean_score": self.score_sum / self.count,
                "peak_score": self.peak_score, "peak_frame": self.peak_frame}


@dataclass
class _TrackTotals:
    first_frame: int
    start_time: float
    num_labels: InitVar[int]
    last_frame: int = 0
    end_time: float = 0.0
    frames: int = 0
    probability_sum: np.ndarray = field(init=False)
    label_counts: np.ndarray = field(init=False)
    best_quality: float = -1.0
    best_frame: int = 0
    best_box: np.ndarray | None = None
    run: _Run | None = None

    def __post_init__(self, num_labels: int) -> None:
        self.probability_sum = np.zeros(num_labels, np.float64)
        self.label_counts = np.zeros(num_labels, np.int64)


class TimelineTotals:
    """Running per-track totals of one video's or live session's faces; ``tables()`` gives ``tracks`` and
    ``episodes`` of everything added so far (a stretch still going counts when already long enough)."""

    def __init__(self, labels: list[str], min_episode_seconds: float) -> None:
        self.labels, self.min_episode_seconds = list(labels), min_episode_seconds
        self._tracks: dict[int, _TrackTotals] = {}
        self._episodes: list[dict] = []

    def add(self, batch: FaceBatch) -> None:
        """Fold in the next tracked, smoothed faces (batches in frame order)."""
        if len(batch):
            self.add_rows(batch.track_id, batch.face_frame, np.repeat(batch.pts_time, batch.faces_per_frame()),
                          batch.xyxy, batch.det_score, batch.probabilities, batch.smoothed.argmax(axis=1),
                          batch.smoothed.max(axis=1))

    def add_rows(self, track_id: np.ndarray, frame: np.ndarray, times: np.ndarray, xyxy: np.ndarray,
                 det_score: np.ndarray, probabilities: np.ndarray, label: np.ndarray, score: np.ndarray) -> None:
        """Fold in face rows in frame order: their track, frame index, time (s), box, detector score, (n, k)
        probabilities, and smoothed emotion (label index) and score."""
        quality = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1]) * det_score
        order = np.argsort(track_id, kind="stable")  # each track's rows, in frame order
        for rows in np.split(order, np.flatnonzero(np.diff(track_id[order])) + 1) if len(order) else []:
            track = int(track_id[rows[0]])
            totals = self._tracks.get(track)
            if totals is None:
                totals = self._tracks[track] = _TrackTotals(int(frame[rows[0]]), float(times[rows[0]]), len(self.labels))
            totals.last_frame, totals.end_time = int(frame[rows[-1]]), float(times[rows[-1]])
            totals.frames += len(rows)
            totals.probability_sum += probabilities[rows].sum(axis=0, dtype=np.float64)
            totals.label_counts += np.bincount(label[rows], minlength=len(self.labels))
            best = rows[int(np.argmax(quality[rows]))]
            if quality[best] > totals.best_quality:  # the first face of the best quality
                totals.best_quality, totals.best_frame, totals.best_box = float(quality[best]), int(frame[best]), xyxy[best]
            self._add_runs(track, totals, label[rows], frame[rows], times[rows], score[rows])

    def _add_runs(self, track_id: int, totals: _TrackTotals, label: np.ndarray, frames: np.ndarray,
                  times: np.ndarray, scores: np.ndarray) -> None:
        starts = np.flatnonzero(np.r_[True, np.diff(label) != 0])
        for start, end in zip(starts, np.r_[starts[1:], len(label)]):
            if totals.run is None or totals.run.label != label[start]:
                self._close(track_id, totals.run)
                totals.run = _Run(int(label[start]), int(frames[start]), float(times[start]))
            totals.run.extend(frames[start:end], times[start:end], scores[start:end])

    def _close(self, track_id: int, run: _Run | None) -> None:
        if run is not None and run.end_time - run.start_time >= self.min_episode_seconds:
            self._episodes.append(run.episode(track_id, self.labels))

    def tables(self, person_of_track: dict[int, int | None] | None = None) -> dict[str, pa.Table]:
        """``tracks`` (one row per track, by id) and ``episodes`` (by track, then time), each with its
        track's ``person_id`` from ``person_of_track`` (null: no person, or persons not followed)."""
        person_of_track = person_of_track or {}
        tracks, episodes = [], [episode | {"person_id": person_of_track.get(episode["track_id"])}
                                for episode in self._episodes]
        for track_id in sorted(self._tracks):
            totals = self._tracks[track_id]
            share = totals.label_counts / totals.frames
            means = totals.probability_sum / totals.frames
            tracks.append({
                "track_id": track_id, "person_id": person_of_track.get(track_id), "first_frame": totals.first_frame, "last_frame": totals.last_frame,
                "start_time": totals.start_time, "end_time": totals.end_time, "frames": totals.frames,
                "dominant_emotion": self.labels[int(np.argmax(share))],
                **{f"mean_p_{name}": float(value) for name, value in zip(self.labels, means)},
                **{f"share_{name}": float(value) for name, value in zip(self.labels, share)},
                "best_frame": totals.best_frame,
                **{f"best_{name}": float(value) for name, value in zip(BOX, totals.best_box)}})
            run = totals.run
            if run is not None and run.end_time - run.start_time >= self.min_episode_seconds:
                episodes.append(run.episode(track_id, self.labels) | {"person_id": person_of_track.get(track_id)})
        episodes.sort(key=lambda row: (row["track_id"], row["start_frame"]))
        return {"tracks": pa.Table.from_pylist(tracks, schema=tracks_schema(self.labels)),
                "episodes": pa.Table.from_pylist(episodes, schema=EPISODES_SCHEMA)}


EPISODES_SCHEMA = pa.schema([
    ("track_id", pa.int64()), ("person_id", pa.int64()), ("emotion", pa.string()), ("start_frame", pa.int64()), ("end_frame", pa.int64()),
    ("start_time", pa.float64()), ("end_time", pa.float64()), ("duration_s", pa.float64()),
    ("mean_score", pa.float32()), ("peak_score", pa.float32()), ("peak_frame", pa.int64()),
])


def tracks_schema(labels: list[str]) -> pa.Schema:
    return pa.schema([
        ("track_id", pa.int64()), ("person_id", pa.int64()), ("first_frame", pa.int64()), ("last_frame", pa.int64()),
        ("start_time", pa.float64()),
        ("end_time", pa.float64()), ("frames", pa.int64()), ("dominant_emotion", pa.string()),
        *[(f"mean_p_{label}", pa.float32()) for label in labels], *[(f"share_{label}", pa.float32()) for label in labels],
        ("best_frame", pa.int64()), *[(f"best_{name}", pa.float32()) for name in BOX],
    ])
