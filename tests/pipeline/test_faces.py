"""The face step and the tracker stage, on real weights and real frames, without Ray."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from jobs.spec import ModelOptions
from pipeline.faces import FaceStep
from pipeline.cluster_models import ClusterPlan
from pipeline.inference import LocalModels
from pipeline.results import FaceBatch
from pipeline.sources.file import DecodedFrame, VideoInfo
from pipeline.track import FaceTracker
from tests.conftest import read_rgb


@pytest.fixture(scope="module")
def models() -> LocalModels:
    return LocalModels(ModelOptions(emotion_model="mini-xception", device="cpu"))


def _frames(*images: np.ndarray) -> tuple[list[DecodedFrame], VideoInfo]:
    frames = [DecodedFrame(i, i / 10, av.VideoFrame.from_ndarray(image, format="rgb24")) for i, image in enumerate(images)]
    height, width = images[0].shape[:2]
    info = VideoInfo("test", width, height, 10.0, len(images), None, "rawvideo", 0, False, False)
    return frames, info


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    image = read_rgb("photos/multi_face.jpg")
    return np.ascontiguousarray(image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2])


def test_boxes_found_on_the_small_frame_come_back_in_full_frame_pixels(models, photo):
    frames, info = _frames(photo)
    small = FaceStep(models, info, det_size=480)(frames)
    native = FaceStep(models, info, det_size=None)(frames)
    assert FaceStep(models, info, det_size=480).input_wh[0] == 480 and info.width > 900
    assert len(small) == len(native) >= 4 and small.xyxy[:, 2].max() > 480
    # every face found at 480 px lies where the full-resolution detector put it
    order = np.argsort(small.xyxy[:, 0]), np.argsort(native.xyxy[:, 0])
    assert abs(small.xyxy[order[0]] - native.xyxy[order[1]]).max() < 0.05 * info.width
    assert abs(small.landmarks[order[0]] - native.landmarks[order[1]]).max() < 0.05 * info.width
    np.testing.assert_allclose(small.probabilities.sum(axis=1), 1.0, atol=1e-4)


def test_min_face_drops_exactly_the_faces_below_it(models, photo):
    frames, info = _frames(photo)
    every = FaceStep(models, info, det_size=640)(frames)
    sides = np.sort(np.minimum(every.xyxy[:, 2] - every.xyxy[:, 0], every.xyxy[:, 3] - every.xyxy[:, 1]))
    gaps = np.diff(sides)
    middle = len(sides) // 2
    split = middle - 1 + int(np.argmax(gaps[middle - 1:]))  # a clear gap between two face sizes, near the median
    threshold = float(sides[split] + sides[split + 1]) / 2
    assert gaps[split] > 2  # far from both faces: rounding cannot decide
    kept = FaceStep(models, info, det_size=640, min_face=threshold)(frames)
    assert len(kept) == len(sides) - split - 1 and 0 < len(kept) < len(every)
    assert (np.minimum(kept.xyxy[:, 2] - kept.xyxy[:, 0], kept.xyxy[:, 3] - kept.xyxy[:, 1]) > threshold).all()


def test_a_frame_without_faces_and_no_frames_at_all(models, photo):
    blank = np.zeros_like(photo)
    frames, info = _frames(blank, photo, blank)
    batch = FaceStep(models, info, det_size=640)(frames)
    assert batch.num_frames == 3 and list(batch.frame_index) == [0, 1, 2]
    assert list(batch.faces_per_frame())[0] == 0 and list(batch.faces_per_frame())[2] == 0
    assert batch.faces_per_frame()[1] == len(batch) >= 4
    none = FaceStep(models, info, det_size=640)([])
    assert none.num_frames == 0 and len(none) == 0 and none.probabilities.shape == (0, len(models.labels))


def test_quality_columns_follow_face_size_turn_and_blur(models, photo):
    def faces(image: np.ndarray) -> FaceBatch:
        frames, info = _frames(np.ascontiguousarray(image))
        found = FaceStep(models, info, det_size=None)(frames)
        return _by_x(found)

    full, half = faces(photo), faces(cv2.resize(photo, (photo.shape[1] // 2, photo.shape[0] // 2)))
    mirrored = faces(photo[:, ::-1])
    blurred = faces(cv2.GaussianBlur(photo, (0, 0), 3))
    assert len(full) == len(half) == len(mirrored) == len(blurred) >= 4
    # the crop's side in frame pixels: half, plus mini-xception's fixed 10 px margins on both sides
    np.testing.assert_allclose(half.face_px, (full.face_px - 20) / 2 + 20, rtol=0.1)
    # the people of the photo face the camera, more or less; a mirror turns each the other way
    assert np.abs(full.yaw).max() < 35 and np.abs(full.pitch).max() < 35
    assert np.median(np.abs(mirrored.yaw[::-1] + full.yaw)) < 6  # rough: the landmarks move a little too
    assert (blurred.sharpness < 0.5 * full.sharpness).all()


def _by_x(batch: FaceBatch) -> FaceBatch:
    """The faces of a one-frame batch from left to right."""
    order = np.argsort(batch.xyxy[:, 0] + batch.xyxy[:, 2])  # by center
    arrays = {name: getattr(batch, name)[order] for name in
              ("face_frame", "xyxy", "det_score", "landmarks", "probabilities", "face_px", "yaw", "pitch", "sharpness")}
    return FaceBatch(batch.frame_index, batch.pts_time, **arrays)


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


@pytest.mark.parametrize("resources, nodes, expected", [
    # a 2-core laptop: one model actor on one CPU with both threads, half-CPU decode tasks, one segment at a time
    ({"CPU": 2}, [2], dict(actors=1, actor_threads=2, segment_cpus=0.5, max_segments_in_flight=1)),
    # a 16-core machine: two actors of 7 threads, a CPU per decode task, the rest decoding
    ({"CPU": 16}, [16], dict(actors=2, actor_threads=7, segment_cpus=1.0, max_segments_in_flight=2)),
    # four 4-core nodes: an actor never asks for more than one node has (4, not 7), the other CPUs decode
    ({"CPU": 16}, [4, 4, 4, 4], dict(actors=2, actor_threads=4, segment_cpus=1.0, max_segments_in_flight=7)),
    # ten 2-core nodes: actors fit a node (2 threads), every free CPU decodes
    ({"CPU": 20}, [2] * 10, dict(actors=2, actor_threads=2, segment_cpus=1.0, max_segments_in_flight=15)),
    # GPUs: one actor per GPU, the CPUs decode
    ({"CPU": 16, "GPU": 2}, [16], dict(actors=2, actor_threads=2, segment_cpus=1.0, max_segments_in_flight=14)),
])
def test_the_cluster_plan_sizes_actors_and_decoding_to_the_cluster(resources, nodes, expected):
    plan = ClusterPlan.for_cluster(resources, nodes)
    assert {name: getattr(plan, name) for name in expected} == expected
    assert plan.actor_resources.get("num_cpus", 0) <= max(nodes)
    assert plan.actor_resources.get("num_gpus", 0) == (1 if "GPU" in resources else 0)
