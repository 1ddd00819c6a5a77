"""Per-person answers from per-frame faces: smoothed emotions, episodes and track summaries.

Tracks and episodes are functions of the ``faces`` rows of one video alone (track id, frame, time,
box, score, probabilities and smoothed emotion), so a resumed or re-run job, live mode and anyone
holding the faces table get the same answers.

- **Smoothing**, per track, is an exponential moving average with a time constant in seconds, so it
  means the same at any frame rate, with ``--fps`` sampling and with dropped frames: batch mode runs
  it forward and then backward over the whole track (no lag), live mode forward only (the present
  from the past).
- **Episodes** are stretches of one track in one smoothed emotion lasting at least ``min_seconds``
  (first to last frame); they never overlap and lie inside their track.
- **Tracks**: span, frames, dominant emotion (the largest share of smoothed time), mean raw
  probabilities, share of each smoothed emotion, and the best face (largest area times detector score).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

# the faces columns tracks and episodes are computed from (besides p_<label> for each label)
FACES_COLUMNS = ["track_id", "frame_index", "pts_time", "x1", "y1", "x2", "y2", "det_score",
                 "smoothed_emotion", "smoothed_score"]

def ema(times: np.ndarray, probabilities: np.ndarray, tau: float, *, start: np.ndarray | None = None,
        start_time: float | None = None) -> np.ndarray:
    """Causal exponential moving average of one track's (n, k) probabilities at rising ``times`` (seconds).

    A step of ``dt`` seconds weighs the new value by ``1 - exp(-dt / tau)``: a long gap forgets the
    past, a burst of frames does not over-weigh it. ``start``/``start_time`` continue an earlier call.
    """
    smoothed = np.empty((len(times), probabilities.shape[1]), np.float32)
    current = None if start is None else start.astype(np.float64)
    previous = start_time
    for i, (time, value) in enumerate(zip(times, probabilities)):
        if current is None or tau <= 0:
            current = value.astype(np.float64)
        else:
            current = current + (1.0 - np.exp(-max(time - previous, 0.0) / tau)) * (value - current)
        smoothed[i], previous = current, time
    return smoothed


def smooth_tracks(track_id: np.ndarray, times: np.ndarray, probabilities: np.ndarray, tau: float) -> np.ndarray:
    """(n, k) smoothed probabilities of face rows in any order: each track forward then backward."""
    smoothed = np.empty(probabilities.shape, np.float32)
    order = np.lexsort((times, track_id))
    for rows in np.split(order, np.flatnonzero(np.diff(track_id[order])) + 1):
        if len(rows):
            forward = ema(times[rows], probabilities[rows], tau)
            smoothed[rows] = ema(-times[rows][::-1], forward[::-1], tau)[::-1]
    return smoothed


class CausalSmoother:
    """Live mode's smoother: each track's moving average carried from frame to frame."""

    def __init__(self, tau: float) -> None:
        self.tau = tau
        self._state: dict[int, tuple[np.ndarray, float]] = {}

    def update(self, track_id: np.ndarray, time: float, probabilities: np.ndarray) -> np.ndarray:
        """(n, k) smoothed probabilities of one frame's faces (captured at ``time`` seconds)."""
        smoothed = np.empty(probabilities.shape, np.float32)
        for i, track in enumerate(track_id.tolist()):
            start, start_time = self._state.get(track, (None, None))
            smoothed[i] = ema(np.array([time]), probabilities[i:i + 1], self.tau, start=start, start_time=start_time)[0]
            self._state[track] = (smoothed[i], time)
        return smoothed


def _column(faces: pa.Table, name: str) -> np.ndarray:
    return faces.column(name).to_numpy(zero_copy_only=False)


def episodes_table(faces: pa.Table, labels: list[str], min_seconds: float) -> pa.Table:
    """One row per stretch of one track in one smoothed emotion of at least ``min_seconds``."""
    track, frame, time = (_column(faces, name) for name in ("track_id", "frame_index", "pts_time"))
    label = np.array([labels.index(value) for value in _column(faces, "smoothed_emotion")], np.int64)
    score = _column(faces, "smoothed_score")
    order = np.lexsort((frame, track))
    starts = np.flatnonzero(np.r_[True, (np.diff(track[order]) != 0) | (np.diff(label[order]) != 0)]) if len(order) else []
    rows = []
    for start, end in zip(starts, np.r_[starts[1:], len(order)] if len(order) else []):
        run = order[start:end]
        duration = float(time[run[-1]] - time[run[0]])
        if duration < min_seconds:
            continue
        peak = run[int(np.argmax(score[run]))]
        rows.append({"track_id": int(track[run[0]]), "emotion": labels[label[run[0]]],
                     "start_frame": int(frame[run[0]]), "end_frame": int(frame[run[-1]]),
                     "start_time": float(time[run[0]]), "end_time": float(time[run[-1]]), "duration_s": duration,
                     "mean_score": float(score[run].mean()), "peak_score": float(score[peak]),
                     "peak_frame": int(frame[peak])})
    return pa.Table.from_pylist(rows, schema=EPISODES_SCHEMA)


def timeline_tables(faces: pa.Table, labels: list[str], min_episode_seconds: float) -> dict[str, pa.Table]:
    """The ``tracks`` and ``episodes`` tables of one video's (or live session's) faces rows."""
    return {"tracks": tracks_table(faces, labels), "episodes": episodes_table(faces, labels, min_episode_seconds)}


def tracks_table(faces: pa.Table, labels: list[str]) -> pa.Table:
    """One row per track: span, frames, dominant emotion, mean probabilities, shares, best face."""
    track, frame, time = (_column(faces, name) for name in ("track_id", "frame_index", "pts_time"))
    xyxy = np.stack([_column(faces, name) for name in ("x1", "y1", "x2", "y2")], axis=1).reshape(-1, 4)
    probabilities = np.stack([_column(faces, f"p_{label}") for label in labels], axis=1).reshape(-1, len(labels))
    label = np.array([labels.index(value) for value in _column(faces, "smoothed_emotion")], np.int64)
    quality = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1]) * _column(faces, "det_score")
    rows = []
    order = np.argsort(track, kind="stable")
    for members in np.split(order, np.flatnonzero(np.diff(track[order])) + 1) if len(order) else []:
        track_id = track[members[0]]
        share = np.bincount(label[members], minlength=len(labels)) / len(members)
        best = members[int(np.argmax(quality[members]))]
        means = probabilities[members].mean(axis=0)
        rows.append({"track_id": int(track_id), "first_frame": int(frame[members].min()),
                     "last_frame": int(frame[members].max()), "start_time": float(time[members].min()),
                     "end_time": float(time[members].max()), "frames": len(members),
                     "dominant_emotion": labels[int(np.argmax(share))],
                     **{f"mean_p_{name}": float(value) for name, value in zip(labels, means)},
                     **{f"share_{name}": float(value) for name, value in zip(labels, share)},
                     "best_frame": int(frame[best]),
                     **{f"best_{name}": float(value) for name, value in zip(("x1", "y1", "x2", "y2"), xyxy[best])}})
    return pa.Table.from_pylist(rows, schema=tracks_schema(labels))


EPISODES_SCHEMA = pa.schema([
    ("track_id", pa.int64()), ("emotion", pa.string()), ("start_frame", pa.int64()), ("end_frame", pa.int64()),
    ("start_time", pa.float64()), ("end_time", pa.float64()), ("duration_s", pa.float64()),
    ("mean_score", pa.float32()), ("peak_score", pa.float32()), ("peak_frame", pa.int64()),
])


def tracks_schema(labels: list[str]) -> pa.Schema:
    return pa.schema([
        ("track_id", pa.int64()), ("first_frame", pa.int64()), ("last_frame", pa.int64()), ("start_time", pa.float64()),
        ("end_time", pa.float64()), ("frames", pa.int64()), ("dominant_emotion", pa.string()),
        *[(f"mean_p_{label}", pa.float32()) for label in labels], *[(f"share_{label}", pa.float32()) for label in labels],
        ("best_frame", pa.int64()), *[(f"best_{name}", pa.float32()) for name in ("x1", "y1", "x2", "y2")],
    ])
