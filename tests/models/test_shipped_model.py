"""The emotion model emoray ships: what its checkpoint records is what it does, and it beats mini-Xception."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from jobs.spec import RunOptions
from models import EmotionClassifier, registry
from models.datasets import read_class_folders
from models.evaluate import evaluate
from pipeline.cli import main
from tests.conftest import shared


@pytest.fixture(scope="module")
def val():
    return read_class_folders(shared("fer2013/val"))


def test_shipped_model_is_the_default_and_its_recorded_val_accuracy_holds(val):
    assert registry.DEFAULT_EMOTION_MODEL == RunOptions().emotion_model == "emoray-vgg48-fer2013"
    shipped = EmotionClassifier(device="cpu")
    assert shipped.model_id.startswith("emoray-vgg48-fer2013@")
    measured = evaluate(shipped, val)
    assert measured["accuracy"] == pytest.approx(shipped.metrics["val_accuracy"], abs=1e-9)
    assert shipped.metrics["val_data_sha256"] == val.fingerprint()
    assert measured["calibration"]["ece"] == pytest.approx(shipped.metrics["val_ece"], abs=1e-9)
    assert measured["calibration"]["ece"] <= 0.03  # its probabilities mean what they say, within 3 points
    baseline = evaluate(EmotionClassifier("mini-xception", device="cpu"), val)
    assert measured["accuracy"] > baseline["accuracy"]


def test_models_list_shows_the_shipped_model_with_its_metrics():
    rows = {row["name"]: row for row in json.loads(CliRunner().invoke(main, ["models", "list", "--json"]).output)}
    shipped = rows["emoray-vgg48-fer2013"]
    assert shipped["role"] == "emotion" and shipped["size_bytes"] < 5_000_000
    assert shipped["metrics"]["val_accuracy"] > 0.6 and shipped["metrics"]["command"].startswith("emoray train")


def test_shipped_model_averages_each_face_with_its_mirror_image(val):
    shipped = EmotionClassifier(device="cpu")
    assert shipped.preprocess.mirror_average
    faces = val.images[:64]
    np.testing.assert_allclose(shipped(faces), shipped(np.ascontiguousarray(faces[:, :, ::-1])), atol=1e-6)
    assert shipped.metrics["val_accuracy"] > shipped.metrics["val_accuracy_single_view"]
