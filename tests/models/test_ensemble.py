"""An ensemble checkpoint: several nets as one emotion model, averaging their softmax with one temperature."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import EmotionClassifier, checkpoint, registry
from models.calibration import probabilities
from models.datasets import read_class_folders
from models.ensemble import ensemble_checkpoint
from models.emotion.graph import checkpoint_logits
from models.evaluate import evaluate
from tests.conftest import shared
from tests.tolerances import ece_tolerance, faces_apart

PAIR = ("emoray-vgg48-fer2013", "emoray-small-fer2013")  # two shipped nets of one input (48x48 gray, mirrored)


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    return read_class_folders(shared("fer2013/val")).images[:96]


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_an_ensemble_is_the_average_of_its_members_softmax_at_one_temperature(faces, tmp_path, backend):
    members = [checkpoint.load(registry.locate(name, "emotion"), "emotion") for name in PAIR]
    payload = ensemble_checkpoint(members, "pair") | {"temperature": 1.3}
    path = tmp_path / "pair.pt"
    torch.save(payload, path)
    ensemble = EmotionClassifier(path, device="cpu", backend=backend)
    # each member's own (views, n, classes) logits, its own temperature left out: the ensemble fits one
    views = np.concatenate([checkpoint_logits(member, faces) for member in members])
    assert views.shape == (4, len(faces), 7)
    np.testing.assert_allclose(ensemble(faces), probabilities(views, 1.3), atol=2e-5)  # float32 softmax sums
    assert ensemble.labels == members[0]["labels"] and ensemble.model_id.startswith("pair@")


def test_an_ensemble_refuses_members_of_another_input():
    members = [checkpoint.load(registry.locate(name, "emotion"), "emotion")
               for name in ("emoray-vgg48-fer2013", "mini-xception")]
    with pytest.raises(ValueError, match="its input or labels differ"):
        ensemble_checkpoint(members, "mixed")


def test_the_shipped_ensemble_holds_its_record_and_beats_the_default_on_val():
    val = read_class_folders(shared("fer2013/val"))
    ensemble = EmotionClassifier("emoray-ensemble-fer2013", device="cpu")
    measured = evaluate(ensemble, val)
    record = ensemble.metrics
    # recorded on another machine: the same faces right, give or take one (tests/tolerances.py)
    assert faces_apart(measured["accuracy"], record["val_accuracy"], len(val)) <= 1
    assert record["val_data_sha256"] == val.fingerprint()
    assert measured["calibration"]["ece"] == pytest.approx(record["val_ece"], abs=ece_tolerance(len(val)))
    assert measured["calibration"]["ece"] <= 0.03
    default = EmotionClassifier(device="cpu").metrics["val_accuracy"]
    assert record["val_accuracy"] >= default + 0.002  # a member is kept only if it adds 0.2 point
    assert [m["name"] for m in record["members"]][0] == "emoray-vgg48-fer2013"
