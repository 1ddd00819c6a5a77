"""The onnxruntime backend gives the torch backend's rows; its exports are cached and checksummed."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jobs.spec import ModelOptions
from models import EmotionClassifier, FaceDetector, WeightsError, backend
from pipeline.faces import FaceStep
from pipeline.inference import LocalModels
from pipeline.sources.file import iter_frames, probe
from tests.conftest import read_rgb, shared

ROOT = Path(__file__).resolve().parents[2]
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
        backend.choose(device, name)


def test_an_export_is_cached_and_a_corrupt_one_is_made_again(tmp_path, monkeypatch):
    monkeypatch.setenv("EMORAY_HOME", str(tmp_path))
    first = EmotionClassifier("mini-xception", device="cpu", backend="onnx")
    (path,) = (tmp_path / "onnx").glob("mini-xception-*.onnx")
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["sha256"] == backend.registry.sha256_of(path) and record["meta"]["model_id"] == first.model_id
    modified = path.stat().st_mtime_ns
    crops = np.random.default_rng(0).integers(0, 256, (4, 64, 64), dtype=np.uint8)
    again = EmotionClassifier("mini-xception", device="cpu", backend="onnx")
    assert path.stat().st_mtime_ns == modified  # cached: not exported again
    assert (again.model_id, again.labels, again.preprocess) == (first.model_id, first.labels, first.preprocess)
    path.write_bytes(b"not an onnx model")
    repaired = EmotionClassifier("mini-xception", device="cpu", backend="onnx")
    assert backend.registry.sha256_of(path) == record["sha256"]  # exported again, the same bytes
    np.testing.assert_array_equal(repaired(crops), first(crops))


def test_a_cpu_process_with_the_exports_cached_never_imports_torch():
    """torch costs a model actor about a second of start-up and ~180 MB; onnxruntime needs none of it."""
    LocalModels(ModelOptions())  # exports cached by now (also when this test runs alone)
    code = "\n".join([
        "import sys, numpy as np",
        "from jobs.spec import ModelOptions",
        "from pipeline.inference import LocalModels",
        "models = LocalModels(ModelOptions())",
        "models.detect(np.zeros((2, 360, 640, 3), np.uint8)).result()",
        "models.classify(np.zeros((1, 48, 48), np.uint8))",
        "print(models.model_ids()['detector'], 'torch' in sys.modules)",
    ])
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.split() == [LocalModels(ModelOptions()).model_ids()["detector"], "False"]


def test_a_cached_detector_export_is_never_taken_for_a_classifier():
    detector = FaceDetector(device="cpu")  # its export is cached now
    with pytest.raises(WeightsError, match="not a emotion checkpoint"):
        EmotionClassifier(backend.registry.cached_path(detector.model_id.split("@")[0]), device="cpu")


def test_emoray_num_threads_reaches_onnxruntime_and_a_bad_value_is_a_clear_error(monkeypatch):
    """onnxruntime ignores OMP_NUM_THREADS: the tests' one-thread run reaches it through EMORAY_NUM_THREADS."""
    monkeypatch.setenv("EMORAY_NUM_THREADS", "1")
    one = EmotionClassifier("mini-xception", device="cpu", backend="onnx")
    assert one.run.session.get_session_options().intra_op_num_threads == 1
    given = EmotionClassifier("mini-xception", device="cpu", backend="onnx", num_threads=2)
    assert given.run.session.get_session_options().intra_op_num_threads == 2  # an explicit count wins
    monkeypatch.setenv("EMORAY_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="EMORAY_NUM_THREADS must be a whole number of threads.*'two'"):
        EmotionClassifier("mini-xception", device="cpu")
