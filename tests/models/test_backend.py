"""The onnxruntime backend gives the torch backend's rows; its exports are cached and checksummed."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from jobs.spec import ModelOptions
from models import EmotionClassifier, FaceDetector, backend
from pipeline.faces import FaceStep
from pipeline.inference import LocalModels
from pipeline.sources.file import iter_frames, probe
from tests.conftest import read_rgb, shared

CLIPS = ["WolfgangLanger_Pexels.mp4", "two_faces.mp4", "three_faces_walking.mp4", "face_noface.mov"]
BOX_TOLERANCE_PX, PROBABILITY_TOLERANCE = 1e-3, 1e-4


@pytest.fixture(scope="module")
def both() -> dict[str, LocalModels]:
    return {name: LocalModels(ModelOptions(device="cpu", backend=name)) for name in ("torch", "onnx")}


@pytest.mark.parametrize("clip", CLIPS)
def test_onnx_and_torch_give_the_same_rows_on_the_shared_clips(both, clip):
    path = shared(f"videos/{clip}")
    info = probe(path)
    frames = list(itertools.islice(iter_frames(path), 0, 48, 3))
    torch_rows, onnx_rows = (FaceStep(both[name], info, det_size=640)(frames) for name in ("torch", "onnx"))
    assert len(torch_rows.xyxy) == len(onnx_rows.xyxy) > 0
    np.testing.assert_array_equal(torch_rows.face_frame, onnx_rows.face_frame)
    assert np.abs(torch_rows.xyxy - onnx_rows.xyxy).max() < BOX_TOLERANCE_PX
    assert np.abs(torch_rows.landmarks - onnx_rows.landmarks).max() < BOX_TOLERANCE_PX
    assert np.abs(torch_rows.det_score - onnx_rows.det_score).max() < PROBABILITY_TOLERANCE
    assert np.abs(torch_rows.probabilities - onnx_rows.probabilities).max() < PROBABILITY_TOLERANCE


def test_both_backends_agree_on_photos_of_any_size_and_on_the_other_classifier():
    photos = [read_rgb("photos/multi_face.jpg"), read_rgb("photos/solvay_1927.png")]
    detectors = {name: FaceDetector(device="cpu", backend=name) for name in ("torch", "onnx")}
    found = {name: detector(photos) for name, detector in detectors.items()}  # resized and padded to one batch
    for ours, theirs in zip(found["torch"], found["onnx"]):
        assert len(ours) == len(theirs) >= 5
        assert np.abs(ours.xyxy - theirs.xyxy).max() < BOX_TOLERANCE_PX
    classifiers = {name: EmotionClassifier("mini-xception", device="cpu", backend=name) for name in ("torch", "onnx")}
    crops = classifiers["torch"].crop(photos[1], found["torch"][1].xyxy)
    assert np.abs(classifiers["torch"](crops) - classifiers["onnx"](crops)).max() < PROBABILITY_TOLERANCE


def test_the_backend_is_part_of_the_model_ids(both):
    ids = {name: models.model_ids() for name, models in both.items()}
    assert ids["torch"]["detector"].endswith("+torch") and ids["onnx"]["detector"].endswith("+onnx")
    assert ids["torch"]["emotion_model"].split("+")[0] == ids["onnx"]["emotion_model"].split("+")[0]
    assert ModelOptions().backend == "auto" and FaceDetector(device="cpu").backend == "onnx"  # auto on a CPU


@pytest.mark.parametrize("name, device, message", [
    ("tensorrt", "cpu", "backend must be one of auto, torch, onnx"),
    ("onnx", "cuda", "backend 'onnx' runs on the CPU"),
])
def test_bad_backends_are_clear_errors(name, device, message):
    with pytest.raises(ValueError, match=message):
        backend.resolve_backend(name, torch.device(device))


def test_an_export_is_cached_and_a_corrupt_one_is_made_again(tmp_path, monkeypatch):
    monkeypatch.setenv("EMORAY_HOME", str(tmp_path))
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Softmax(dim=-1))
    example = torch.zeros(1, 3)

    def export():
        return backend.exported(module, example, model_id="tiny@0123456789ab", variant={"v": 1},
                                output_names=("p",), dynamic={0: "batch"})

    path = export()
    record = json.loads(path.with_suffix(".json").read_text())
    assert path.parent == tmp_path / "onnx" and record["sha256"] == backend.registry.sha256_of(path)
    modified = path.stat().st_mtime_ns
    assert export() == path and path.stat().st_mtime_ns == modified  # cached: not exported again
    path.write_bytes(b"not an onnx model")
    assert backend.registry.sha256_of(export()) == record["sha256"]  # exported again, the same bytes
    runner = backend.OnnxRunner(module, example, model_id="tiny@0123456789ab", variant={"v": 1},
                                output_names=("p",), dynamic={0: "batch"})
    inputs = torch.randn(4, 3)
    np.testing.assert_allclose(runner(inputs)[0].numpy(), module(inputs).detach().numpy(), atol=1e-6)
