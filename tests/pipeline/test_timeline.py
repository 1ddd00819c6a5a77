"""Smoothing, episodes and track summaries as functions of faces rows fed in frame order (no models, no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.results import FaceBatch
from pipeline.smoothing import HORIZON_TAUS, CausalSmoother, TwoPassSmoother, ema, smooth_tracks
from pipeline.timeline import TimelineTotals

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


def _batch(track: list[list[int]], probabilities: np.ndarray, fps: float = 10.0, widths=None) -> FaceBatch:
    """Frames at ``fps``, frame i holding one face per track id in ``track[i]`` (so a frame may have none)."""
    counts = [len(ids) for ids in track]
    frame_index = np.arange(len(track))
    n = sum(counts)
    widths = np.full(n, 40.0, np.float32) if widths is None else np.asarray(widths, np.float32)
    xyxy = np.stack([np.zeros(n), np.zeros(n), widths, np.full(n, 40.0)], axis=1).astype(np.float32)
    zeros = np.zeros(n, np.float32)
    return FaceBatch(frame_index, frame_index / fps, np.repeat(frame_index, counts), xyxy, np.full(n, 0.9, np.float32),
                     np.zeros((n, 5, 2), np.float32), probabilities.astype(np.float32), zeros, zeros, zeros, zeros,
                     track_id=np.array([i for ids in track for i in ids], np.int64))


def _in_pieces(batch: FaceBatch, sizes: list[int]) -> list[FaceBatch]:
    pieces, rest = [], batch
    for size in sizes:
        piece, rest = rest.split(min(size, rest.num_frames))
        pieces.append(piece)
    return pieces + [rest]


def test_streamed_two_way_smoothing_equals_the_whole_video_and_holds_only_its_window():
    rng = np.random.default_rng(0)
    frames = 2000  # 200 s at 10 fps, faces of tracks 0 and 1 coming and going
    track = [[k for k in (0, 1) if rng.random() < 0.7] for _ in range(frames)]
    probabilities = rng.dirichlet(np.ones(len(LABELS)), sum(map(len, track)))
    whole = _batch(track, probabilities)
    tau = 1.0
    expected = smooth_tracks(whole.track_id, np.repeat(whole.pts_time, whole.faces_per_frame()), whole.probabilities, tau)
    smoother = TwoPassSmoother(tau, len(LABELS))
    out = []
    for piece in _in_pieces(whole, [int(s) for s in rng.integers(1, 300, 12)]):
        final = smoother.write(piece)
        if final.num_frames:  # nothing final within the horizon of the newest frame
            assert final.pts_time[-1] <= piece.pts_time[-1] - HORIZON_TAUS * tau
        out.append(final)
    out.append(smoother.close())
    streamed = FaceBatch.concatenate(out, len(LABELS))
    assert list(streamed.frame_index) == list(range(frames)) and (streamed.track_id == whole.track_id).all()
    np.testing.assert_allclose(streamed.smoothed, expected, atol=1e-6)  # exp(-20) of the tail, float32 rounding


def test_episodes_keep_stretches_of_at_least_the_minimum_inside_their_track():
    labels = ["sad"] * 10 + ["happy"] * 3 + ["sad"] * 10 + ["neutral"] * 20
    batch = _batch([[0]] * len(labels), _onehot(labels))
    totals = TimelineTotals(LABELS, min_episode_seconds=0.5)
    for piece in _in_pieces(batch.with_smoothed(batch.probabilities), [5, 9, 1, 20]):  # any split: the same answer
        totals.add(piece)
    episodes = totals.tables()["episodes"].to_pylist()
    assert [(e["emotion"], e["start_frame"], e["end_frame"]) for e in episodes] == [
        ("sad", 0, 9), ("sad", 13, 22), ("neutral", 23, 42)]  # the 0.2 s of happy is no episode
    assert all(a["end_frame"] < b["start_frame"] for a, b in zip(episodes, episodes[1:]))
    assert episodes[-1]["duration_s"] == pytest.approx(1.9)  # still going at the end, already long enough


def test_a_track_summary_adds_up():
    labels = ["happy"] * 4 + ["sad"] * 2 + ["angry"] * 4
    batch = _batch([[0]] * 6 + [[1]] * 4, _onehot(labels), widths=40.0 + np.arange(10))
    totals = TimelineTotals(LABELS, min_episode_seconds=0.5)
    for piece in _in_pieces(batch.with_smoothed(batch.probabilities), [3, 4]):
        totals.add(piece)
    tracks = {row["track_id"]: row for row in totals.tables()["tracks"].to_pylist()}
    assert tracks[0]["frames"] == 6 and tracks[0]["dominant_emotion"] == "happy"
    assert abs(tracks[0]["share_happy"] - 4 / 6) < 1e-6 and abs(sum(tracks[0][f"share_{l}"] for l in LABELS) - 1) < 1e-6
    assert tracks[0]["best_frame"] == 5  # the widest box at the same score
    assert (tracks[1]["first_frame"], tracks[1]["last_frame"], tracks[1]["dominant_emotion"]) == (6, 9, "angry")
    assert tracks[1]["mean_p_angry"] == pytest.approx(1.0)
