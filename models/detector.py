"""``FaceDetector``: batched RetinaFace on numpy or torch frames, on CPU (onnxruntime) or GPU (torch).

Decoding, thresholds and NMS run in numpy on the network's outputs, so a CPU process whose ONNX
export is cached never imports torch (only frames of other sizes than ``det_size`` are resized by torch).
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any, Sequence, Union

import numpy as np

from models import registry
from models.backend import choose, open_network
from models.detections import Detections
from models.retinaface.box_codec import decode_boxes, decode_landmarks
from models.retinaface.nms import batched_nms
from models.retinaface.priors import priors

if TYPE_CHECKING:
    import torch

Frames = Union[np.ndarray, "torch.Tensor", Sequence[Union[np.ndarray, "torch.Tensor"]]]
PAD_RGB = (123, 117, 104)  # frames of a batch are padded with the mean RetinaFace was trained with: zero after normalization
PRE_NMS_TOP_K = 5000  # candidates a frame keeps before NMS, as in the reference RetinaFace (Pytorch_Retinaface top_k)


def _build(payload: dict) -> Any:
    from models.retinaface.graph import build

    return build(payload)


class FaceDetector:
    """Finds faces, their boxes and five landmarks, in batches of frames.

    Load once, call many times; works in-process and as a Ray actor.

    Args:
        weights: a registry name (``emoray models list``), a checkpoint path or an http(s) URL of a
            Pytorch_Retinaface ``.pth``.
        device: ``"auto"`` (GPU when there is one), ``"cpu"`` or ``"cuda[:i]"``.
        half: float16 inference; None means on for CUDA, off for CPU.
        score_threshold: minimum face score in [0, 1].
        nms_iou: boxes overlapping a better one by more than this IoU are dropped.
        det_size: frames are resized so that their longer side has this many pixels before detection
            (results are mapped back to the original frame); None detects at native resolution.
        min_face: faces whose shorter box side is below this many pixels (original frame) are dropped.
        num_threads: CPU threads of this process for torch and onnxruntime (None: ``$EMORAY_NUM_THREADS``,
            else their defaults).
        backend: ``"auto"`` (onnxruntime on a CPU, torch on a GPU), ``"torch"`` or ``"onnx"``; the
            backend is part of ``model_id``, because the two differ in the last digits.
    """

    def __init__(
        self,
        weights: str | os.PathLike = registry.DEFAULT_DETECTOR,
        *,
        device: str | torch.device | None = "auto",
        half: bool | None = None,
        score_threshold: float = 0.6,
        nms_iou: float = 0.4,
        det_size: int | None = 640,
        min_face: float = 0.0,
        num_threads: int | None = None,
        backend: str = "auto",
    ) -> None:
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], but got {score_threshold}")
        if not 0.0 < nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1], but got {nms_iou}")
        if det_size is not None and det_size < 32:
            raise ValueError(f"det_size must be at least 32 pixels or None, but got {det_size}")
        self.device, self.backend = choose(device, backend)
        self.half = (self.device.startswith("cuda") if half is None else bool(half)) and self.backend == "torch"
        self.score_threshold, self.nms_iou, self.det_size, self.min_face = score_threshold, nms_iou, det_size, min_face
        self.run, meta = open_network(weights, "detector", device=self.device, backend=self.backend, half=self.half,
                                      num_threads=num_threads, build=_build,
                                      describe=lambda payload: {"backbone": payload["backbone"]},
                                      output_names=("loc", "conf", "landmarks"),
                                      dynamic={0: "batch", 1: "height", 2: "width"})
        self.model_id: str = meta["model_id"]
        self.backbone: str = meta["backbone"]

    def info(self) -> dict:
        """What a remote caller needs to know about this detector (actors expose no attributes)."""
        return {"model_id": self.model_id, "device": self.device, "half": self.half, "backend": self.backend}

    def __call__(self, frames: Frames) -> list[Detections]:
        """Detect faces in a batch of RGB frames.

        Args:
            frames: (N, H, W, 3) uint8 RGB as a numpy array or torch tensor, or a sequence of
                (H, W, 3) RGB / (H, W) gray frames, which may differ in size.

        Returns:
            One ``Detections`` per frame, in pixels of that frame, by decreasing score.
        """
        batch, scales, shapes = self._prepare(frames)
        if batch is None:
            return []
        loc, conf, landmarks = self.run(batch)
        return self._postprocess(loc, conf, landmarks, batch.shape[1:3], scales, shapes)

    def _prepare(self, frames: Frames) -> tuple[np.ndarray | None, np.ndarray, list[tuple[int, int]]]:
        """Frames -> one (N, H, W, 3) uint8 RGB batch (resized, padded with the mean color), per-frame
        (sx, sy) scales and sizes. A batch of equal frames needing no resize passes as it is."""
        if _is_array(frames):
            batch = _numpy(frames)
            if batch.ndim != 4 or batch.shape[-1] != 3:
                raise ValueError(f"frames must be a batch with shape (N, H, W, 3) or a list of frames, "
                                 f"but got shape {tuple(batch.shape)}")
            if len(batch) and batch.dtype == np.uint8 and self.det_size in (None, max(batch.shape[1:3])):
                return batch, np.ones((len(batch), 2), np.float32), [tuple(batch.shape[1:3])] * len(batch)
            items = list(batch)
        else:
            items = [_numpy(frame) for frame in frames]
        if not items:
            return None, np.empty((0, 2), np.float32), []
        images, scales, shapes = [], [], []
        for item in items:
            if item.ndim == 2:
                item = np.repeat(item[..., None], 3, axis=-1)
            if item.ndim != 3 or item.shape[-1] != 3:
                raise ValueError(f"each frame must have shape (H, W, 3) or (H, W), but got {tuple(item.shape)}")
            if item.dtype != np.uint8:
                raise ValueError(f"frames must be uint8, but got {item.dtype}")
            height, width = item.shape[:2]
            image = item
            if self.det_size is not None and max(height, width) != self.det_size:
                image = _resize(item, self.det_size / max(height, width))
            scales.append((image.shape[1] / width, image.shape[0] / height))
            shapes.append((height, width))
            images.append(image)
        out_h, out_w = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
        batch = np.empty((len(images), out_h, out_w, 3), np.uint8)
        batch[:] = PAD_RGB
        for index, image in enumerate(images):
            batch[index, :image.shape[0], :image.shape[1]] = image
        return batch, np.array(scales, np.float32), shapes

    def _postprocess(self, loc: np.ndarray, conf: np.ndarray, landmarks: np.ndarray, input_hw: tuple[int, int],
                     scales: np.ndarray, shapes: list[tuple[int, int]]) -> list[Detections]:
        height, width = int(input_hw[0]), int(input_hw[1])
        anchors = priors(height, width)
        frame_index, anchor_index = _best_candidates(conf[..., 1], self.score_threshold)
        scores = conf[frame_index, anchor_index, 1]
        size = np.array([width, height], np.float32)
        scale = scales[frame_index]
        with np.errstate(over="ignore", invalid="ignore"):  # an untrained network's boxes may be infinite
            boxes = decode_boxes(loc[frame_index, anchor_index], anchors[anchor_index]) * np.tile(size, 2) / np.tile(scale, 2)
            points = decode_landmarks(landmarks[frame_index, anchor_index], anchors[anchor_index]) * size / scale[:, None]
            keep = batched_nms(boxes, scores, frame_index, self.nms_iou)
        frame_index, boxes, scores, points = frame_index[keep], boxes[keep], scores[keep], points[keep]
        results = []
        for index, (frame_h, frame_w) in enumerate(shapes):
            mine = frame_index == index
            xyxy = boxes[mine].astype(np.float32)
            xyxy[:, 0::2] = xyxy[:, 0::2].clip(0, frame_w)
            xyxy[:, 1::2] = xyxy[:, 1::2].clip(0, frame_h)
            found = Detections(xyxy, scores[mine].astype(np.float32), points[mine].astype(np.float32))
            results.append(found[found.side >= self.min_face] if self.min_face > 0 else found)
        return results


def _is_array(frames: Frames) -> bool:
    return isinstance(frames, np.ndarray) or type(frames).__module__.startswith("torch")


def _numpy(frames: Any) -> np.ndarray:
    """A numpy array of a numpy array or a torch tensor (on any device), without importing torch."""
    return frames if isinstance(frames, np.ndarray) else np.asarray(frames.detach().cpu().numpy())


def _resize(image: np.ndarray, factor: float) -> np.ndarray:
    """Bilinear resize by ``factor`` (antialiased when shrinking), as the detector's numbers were measured with."""
    import torch
    import torch.nn.functional as F

    height, width = image.shape[:2]
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    with warnings.catch_warnings():  # read-only frames (e.g. from Ray's object store) are only read here
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        planes = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0).float()
    planes = F.interpolate(planes, size=size, mode="bilinear", antialias=factor < 1, align_corners=False)
    return planes.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()


def _best_candidates(scores: np.ndarray, threshold: float, per_frame: int = PRE_NMS_TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """(frame, anchor) indices of the anchors over ``threshold``, at most ``per_frame`` best of each frame
    (as the reference RetinaFace keeps 5,000 before NMS): NMS's cost stays bounded whatever the threshold."""
    frame_index, anchor_index = np.nonzero(scores > threshold)
    if len(frame_index) <= per_frame:
        return frame_index, anchor_index
    chosen = []
    for frame in np.unique(frame_index):
        mine = np.flatnonzero(frame_index == frame)
        if len(mine) > per_frame:
            mine = mine[np.argsort(-scores[frame, anchor_index[mine]], kind="stable")[:per_frame]]
        chosen.append(np.sort(mine))
    picked = np.concatenate(chosen)
    return frame_index[picked], anchor_index[picked]
