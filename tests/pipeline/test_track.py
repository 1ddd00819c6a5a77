"""The tracker stage (``pipeline.track``): ids that follow faces across batches, crossings and gaps."""

from __future__ import annotations

import numpy as np

from pipeline.results import FaceBatch
from pipeline.track import FaceTracker


def _batch(frames: list[list[tuple[float, float]]], start: int = 0) -> FaceBatch:
    """Faces of 40x40 px at the given top-left corners, one list per frame."""
    boxes = [[x, y, x + 40, y + 40] for corners in frames for x, y in corners]
    n = len(boxes)
    return FaceBatch(
        frame_index=np.arange(start, start + len(frames)), pts_time=np.arange(start, start + len(frames)) / 10.0,
        face_frame=np.repeat(np.arange(start, start + len(frames)), [len(c) for c in frames]),
        xyxy=np.array(boxes, np.float32).reshape(-1, 4), det_score=np.ones(n, np.float32),
        landmarks=np.zeros((n, 5, 2), np.float32), probabilities=np.full((n, 7), 1 / 7, np.float32),
        face_px=np.full(n, 40, np.float32), yaw=np.zeros(n, np.float32), pitch=np.zeros(n, np.float32),
        sharpness=np.ones(n, np.float32))


def test_the_tracker_stage_follows_faces_across_batches_and_short_gaps():
    tracker = FaceTracker(frame_rate=10)
    first = tracker.update_with_faces(_batch([[(0, 0), (200, 0)], [(5, 0), (205, 0)]]))
    assert first.track_id.tolist() == [0, 1, 0, 1]
    # the next batch of the same video: one frame misses the right face, then both again, and a newcomer
    second = tracker.update_with_faces(_batch([[(10, 0)], [(15, 0), (210, 0), (400, 300)]], start=2))
    assert second.track_id.tolist() == [0, 0, 1, 2]
    assert tracker.update_with_faces(_batch([[]], start=4)).track_id.tolist() == []


def test_two_faces_crossing_keep_their_ids():
    """Boxes that overlap as two people pass each other: the motion model tells them apart."""
    tracker = FaceTracker(frame_rate=10)
    frames = [[(20 * i, 0), (220 - 20 * i, 5)] for i in range(12)]  # they meet at frame 5-6 and go on
    ids = tracker.update_with_faces(_batch(frames)).track_id.reshape(-1, 2)
    assert (ids == [0, 1]).all()


def test_a_face_gone_longer_than_the_lost_time_comes_back_as_a_new_track():
    tracker = FaceTracker(frame_rate=10, lost_seconds=1.0)
    ids = tracker.update_with_faces(_batch([[(0, 0)]] + [[]] * 15 + [[(0, 0)]])).track_id
    assert ids.tolist() == [0, 1]
