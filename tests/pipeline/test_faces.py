"""The face step (``pipeline.faces``), on real weights and real frames, without Ray."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from jobs.spec import ModelOptions
from pipeline.faces import FaceStep
from pipeline.inference import LocalModels
from pipeline.results import FaceBatch
from pipeline.sources.file import DecodedFrame, VideoInfo
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
