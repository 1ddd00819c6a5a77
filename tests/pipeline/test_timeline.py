"""Smoothing, episodes and track summaries as functions of faces rows (no models, no Ray)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.timeline import CausalSmoother, ema, episodes_table, smooth_tracks, tracks_table

LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def _onehot(labels: list[str]) -> np.ndarray:
    return np.eye(len(LABELS), dtype=np.float32)[[LABELS.index(label) for label in labels]]


def test_the_moving_average_is_in_seconds_whatever_the_frame_rate():
    for fps in (5, 30):
        times = np.arange(0, 2, 1 / fps)
        values = _onehot(["sad"] * int(fps) + ["happy"] * int(fps))
        smoothed = ema(times, values, tau=0.5)
        happy_after_half_a_second = smoothed[int(fps) + int(fps / 2) - 1, LABELS.index("happy")]
        assert 0.55 < happy_after_half_a_second < 0.7  # ~1 - 1/e, at 5 and at 30 fps alike
    gap = ema(np.array([0.0, 10.0]), _onehot(["sad", "happy"]), tau=0.5)
    assert gap[1, LABELS.index("happy")] > 0.99  # seconds apart: the past is forgotten


def test_both_ways_smoothing_has_no_lag_and_keeps_tracks_apart():
    times = np.repeat(np.arange(0, 4, 0.1), 2)
    track = np.tile([0, 1], len(times) // 2)
    labels = [("happy" if t >= 2 else "sad") if k == 0 else "neutral" for t, k in zip(times, track)]
    smoothed = smooth_tracks(track, times, _onehot(labels), tau=0.5)
    zero = track == 0
    switch = times[zero][np.argmax(smoothed[zero].argmax(axis=1) == LABELS.index("happy"))]
    assert abs(switch - 2.0) <= 0.15  # a causal average would switch ~0.35 s late
    assert (smoothed[~zero].argmax(axis=1) == LABELS.index("neutral")).all()
    live = CausalSmoother(0.5)
    late = [live.update(np.array([0]), t, _onehot([label]))[0].argmax() for t, label in zip(times[zero], np.array(labels)[zero])]
    assert times[zero][late.index(LABELS.index("happy"))] > switch


def _faces(track: list[int], labels: list[str], fps: float = 10.0) -> pa.Table:
    n = len(track)
    frame = np.arange(n)
    smoothed = _onehot(labels) * 0.8 + 0.2 / len(LABELS)
    return pa.table({"track_id": track, "frame_index": frame, "pts_time": frame / fps,
                     "x1": np.zeros(n, np.float32), "y1": np.zeros(n, np.float32), "x2": np.full(n, 40.0 + frame),
                     "y2": np.full(n, 40.0, np.float32), "det_score": np.full(n, 0.9, np.float32),
                     "smoothed_emotion": labels, "smoothed_score": smoothed.max(axis=1),
                     **{f"p_{label}": smoothed[:, i] for i, label in enumerate(LABELS)}})


def test_episodes_keep_stretches_of_at_least_the_minimum_inside_their_track():
    labels = ["sad"] * 10 + ["happy"] * 3 + ["sad"] * 10 + ["neutral"] * 20
    faces = _faces([0] * len(labels), labels)
    episodes = episodes_table(faces, LABELS, min_seconds=0.5).to_pylist()
    assert [(e["emotion"], e["start_frame"], e["end_frame"]) for e in episodes] == [
        ("sad", 0, 9), ("sad", 13, 22), ("neutral", 23, 42)]  # the 0.2 s of happy is no episode
    assert all(a["end_frame"] < b["start_frame"] for a, b in zip(episodes, episodes[1:]))


def test_a_track_summary_adds_up():
    faces = _faces([0] * 6 + [1] * 4, ["happy"] * 4 + ["sad"] * 2 + ["angry"] * 4)
    tracks = {row["track_id"]: row for row in tracks_table(faces, LABELS).to_pylist()}
    assert tracks[0]["frames"] == 6 and tracks[0]["dominant_emotion"] == "happy"
    assert abs(tracks[0]["share_happy"] - 4 / 6) < 1e-6 and abs(sum(tracks[0][f"share_{l}"] for l in LABELS) - 1) < 1e-6
    assert tracks[0]["best_frame"] == 5  # the widest box at the same score
    assert (tracks[1]["first_frame"], tracks[1]["last_frame"], tracks[1]["dominant_emotion"]) == (6, 9, "angry")
