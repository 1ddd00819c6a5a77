"""``FaceDetector``: batched RetinaFace on numpy or torch frames, on CPU (onnxruntime) or GPU (torch)."""

from __future__ import annotations

import os
import warnings
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from models import registry
from models.backend import OnnxRunner, TorchRunner, resolve_backend
from models.detections import Detections
from models.device import resolve_device, resolve_half
from models.retinaface.box_codec import decode_boxes, decode_landmarks
from models.retinaface.network import RetinaFace
from models.retinaface.nms import batched_nms
from models.retinaface.priors import priors

Frames = Union[np.ndarray, torch.Tensor, Sequence[Union[np.ndarray, torch.Tensor]]]
BGR_MEAN = (104.0, 117.0, 123.0)  # the mean RetinaFace was trained with, in BGR order
PAD_RGB = (123, 117, 104)  # frames of a batch are padded with the mean: zero after normalization


class DetectorGraph(torch.nn.Module):
    """uint8 (N, H, W, 3) RGB frames -> RetinaFace's outputs: the normalization is part of the graph."""

    def __init__(self, network: RetinaFace) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(BGR_MEAN).reshape(1, 3, 1, 1))

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bgr = frames.permute(0, 3, 1, 2).flip(1).to(self.mean.dtype) - self.mean
        return self.network(bgr.contiguous(memory_format=torch.channels_last))


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
        num_threads: CPU threads of this process for torch and onnxruntime (None leaves their defaults).
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
        if num_threads:
            torch.set_num_threads(num_threads)
        payload, weights_id = registry.resolve(weights, "detector")
        self.device = resolve_device(device)
        self.backend = resolve_backend(backend, self.device)
        self.half = resolve_half(half, self.device) and self.backend == "torch"
        self.model_id = f"{weights_id}+{self.backend}"
        self.score_threshold, self.nms_iou, self.det_size, self.min_face = score_threshold, nms_iou, det_size, min_face
        self.backbone: str = payload["backbone"]
        network = RetinaFace(self.backbone)
        network.load_state_dict(payload["state_dict"])
        graph = DetectorGraph(network)
        if self.backend == "onnx":
            self.run = OnnxRunner(graph, torch.zeros(1, 64, 64, 3, dtype=torch.uint8), model_id=weights_id, variant={},
                                  output_names=("loc", "conf", "landmarks"),
                                  dynamic={0: "batch", 1: "height", 2: "width"}, num_threads=num_threads)
        else:
            self.run = TorchRunner(graph, self.device, half=self.half)
        self._pad = torch.tensor(PAD_RGB, dtype=torch.uint8, device=self.device)

    def info(self) -> dict:
        """What a remote caller needs to know about this detector (actors expose no attributes)."""
        return {"model_id": self.model_id, "device": str(self.device), "half": self.half, "backend": self.backend}

    @torch.inference_mode()
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
        loc, conf, landmarks = (output.to(self.device).float() for output in self.run(batch))
        return self._postprocess(loc, conf, landmarks, batch.shape[1:3], scales, shapes)

    def _prepare(self, frames: Frames) -> tuple[torch.Tensor | None, torch.Tensor, list[tuple[int, int]]]:
        """Frames -> one (N, H, W, 3) uint8 RGB batch (resized, padded with the mean color), per-frame
        (sx, sy) scales and sizes. A batch of equal frames needing no resize passes as it is."""
        with warnings.catch_warnings():  # read-only arrays (e.g. from Ray's object store) are only read here
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            if isinstance(frames, (np.ndarray, torch.Tensor)):
                if frames.ndim != 4 or frames.shape[-1] != 3:
                    raise ValueError(f"frames must be a batch with shape (N, H, W, 3) or a list of frames, "
                                     f"but got shape {tuple(frames.shape)}")
                batch = torch.as_tensor(frames)
                if len(batch) and batch.dtype == torch.uint8 and self.det_size in (None, max(batch.shape[1:3])):
                    shapes = [tuple(batch.shape[1:3])] * len(batch)
                    return batch.to(self.device), torch.ones(len(batch), 2, device=self.device), shapes
                items = list(batch)
            else:
                items = [torch.as_tensor(frame) for frame in frames]
        if not items:
            return None, torch.empty(0, 2), []
        tensors, scales, shapes = [], [], []
        for item in items:
            if item.ndim == 2:
                item = item[..., None].expand(-1, -1, 3)
            if item.ndim != 3 or item.shape[-1] != 3:
                raise ValueError(f"each frame must have shape (H, W, 3) or (H, W), but got {tuple(item.shape)}")
            if item.dtype != torch.uint8:
                raise ValueError(f"frames must be uint8, but got {item.dtype}")
            height, width = item.shape[:2]
            image = item.to(self.device)
            if self.det_size is not None and max(height, width) != self.det_size:
                factor = self.det_size / max(height, width)
                size = (max(1, round(height * factor)), max(1, round(width * factor)))
                planes = image.permute(2, 0, 1).unsqueeze(0).float()
                planes = F.interpolate(planes, size=size, mode="bilinear", antialias=factor < 1, align_corners=False)
                image = planes.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0)
            scales.append((image.shape[1] / width, image.shape[0] / height))
            shapes.append((height, width))
            tensors.append(image)
        out_h, out_w = max(t.shape[0] for t in tensors), max(t.shape[1] for t in tensors)
        batch = self._pad.expand(len(tensors), out_h, out_w, 3).clone()
        for index, image in enumerate(tensors):
            batch[index, :image.shape[0], :image.shape[1]] = image
        return batch, torch.tensor(scales, device=self.device), shapes

    def _postprocess(
        self,
        loc: torch.Tensor,
        conf: torch.Tensor,
        landmarks: torch.Tensor,
        input_hw: tuple[int, int],
        scales: torch.Tensor,
        shapes: list[tuple[int, int]],
    ) -> list[Detections]:
        height, width = int(input_hw[0]), int(input_hw[1])
        anchors = priors(height, width, self.device)
        frame_index, anchor_index = torch.nonzero(conf[..., 1] > self.score_threshold, as_tuple=True)
        scores = conf[frame_index, anchor_index, 1]
        size = torch.tensor([width, height], device=self.device, dtype=torch.float32)
        scale = scales[frame_index]
        boxes = decode_boxes(loc[frame_index, anchor_index], anchors[anchor_index]) * size.repeat(2) / scale.repeat(1, 2)
        points = decode_landmarks(landmarks[frame_index, anchor_index], anchors[anchor_index]) * size / scale[:, None]
        keep = batched_nms(boxes, scores, frame_index, self.nms_iou)
        frame_index, boxes, scores, points = frame_index[keep].cpu(), boxes[keep].cpu(), scores[keep].cpu(), points[keep].cpu()
        results = []
        for index, (frame_h, frame_w) in enumerate(shapes):
            mine = frame_index == index
            xyxy = boxes[mine].clone()
            xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, frame_w)
            xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, frame_h)
            found = Detections(xyxy.numpy(), scores[mine].numpy(), points[mine].numpy())
            results.append(found[found.side >= self.min_face] if self.min_face > 0 else found)
        return results
