"""mini-Xception: exact conversion against the original Keras model, batching, crops (its val accuracy:
test_shipped_model)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.checkpoint import Preprocess
from models.emotion.crop import crop_faces
from tests.conftest import read_rgb, shared

REFERENCE = Path(__file__).parents[1] / "fixtures" / "mini_xception_reference.json"
FER_LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def _val_faces(names: list[str]) -> np.ndarray:
    return np.stack([cv2.imread(str(shared(f"fer2013/val/{name}")), cv2.IMREAD_GRAYSCALE) for name in names])


def test_outputs_equal_the_original_keras_model_on_real_faces(classifier):
    reference = json.loads(REFERENCE.read_text())
    expected = np.array(reference["probabilities"], np.float32)
    faces = np.stack([cv2.resize(face, (64, 64)) for face in _val_faces(reference["images"])])
    actual = classifier(faces)
    assert len(actual) == len(expected) == 70
    assert (actual.argmax(axis=1) == expected.argmax(axis=1)).all()
    assert np.abs(actual - expected).max() < 1e-3


def test_labels_and_preprocessing_travel_with_the_checkpoint(classifier):
    assert classifier.labels == FER_LABELS
    assert (classifier.preprocess.input_size, classifier.preprocess.channels) == (64, 1)


def test_batched_classification_equals_one_by_one(classifier):
    faces = _val_faces([f"happy/{p.name}" for p in sorted(shared("fer2013/val/happy").glob("*.png"))[:16]])
    batched = classifier(faces)
    alone = np.concatenate([classifier(face[None]) for face in faces])
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    np.testing.assert_allclose(batched.sum(axis=1), 1.0, atol=1e-5)


def test_smiling_people_in_a_real_photo_are_happy(detector, classifier):
    photo = read_rgb("photos/multi_face.jpg")
    faces = classifier.classify(photo, detector([photo])[0])
    labels = [classifier.labels[i] for i in faces.emotion_scores.argmax(axis=1)]
    assert labels.count("happy") >= 3


def test_crops_are_square_with_the_fer_margin_and_padded_at_the_frame_edge():
    frame = np.full((100, 200), 50, np.uint8)
    frame[-2:] = 90  # fer pads with the mean of the bottom two rows
    frame[20:60, 30:50] = 255  # a 20x40 bright "face"
    preprocess = Preprocess(input_size=64, channels=1, mean=0.5, std=0.5, margin_px=10)
    inside, at_edge = crop_faces(frame, np.array([[30, 20, 50, 60], [0, 0, 20, 20]], np.float32), preprocess)
    # square 40x40 window around the 20x40 box, grown by 10 px: 60x60, bright in its middle third
    assert inside.shape == (64, 64)
    assert inside[32, 32] == 255 and inside[32, 5] == 50 and inside[32, 58] == 50
    # the window leaves the frame at the top-left: that part is filled with the bottom-rows mean
    assert at_edge[2, 2] == 90 and at_edge[40, 40] == 50


def test_color_models_get_rgb_crops():
    frame = np.zeros((50, 50, 3), np.uint8)
    frame[..., 0] = 200
    crops = crop_faces(frame, np.array([[10, 10, 40, 40]]), Preprocess(input_size=48, channels=3, mean=0.5, std=0.5))
    assert crops.shape == (1, 48, 48, 3) and crops[0, 24, 24].tolist() == [200, 0, 0]


def test_wrong_crop_shape_is_a_clear_error(classifier):
    with pytest.raises(ValueError, match=r"\(n, h, w\) gray"):
        classifier(np.zeros((2, 64, 64, 3), np.uint8))
    assert classifier(np.zeros((0, 64, 64), np.uint8)).shape == (0, 7)


def test_the_command_line_offers_every_architecture():
    from models.emotion import ARCHITECTURE_NAMES
    from models.emotion.archs import ARCHITECTURES

    # every architecture but the ensemble, which is made of trained nets (tools/make_ensemble.py), not trained
    assert sorted(ARCHITECTURE_NAMES) == sorted(set(ARCHITECTURES) - {"ensemble"})
