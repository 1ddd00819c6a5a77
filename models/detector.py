"""``FaceDetector``: batched RetinaFace on numpy or torch frames, on CPU or GPU."""

from __future__ import annotations

import os
import warnings
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from models import registry
from models.detections import Detections
from models.device import resolve_device, resolve_half
from models.retinaface.box_codec import decode_boxes, decode_landmarks
from models.retinaface.network import RetinaFace
from models.retinaface.nms import batched_nms
from models.retinaface.priors import priors

Frames = Union[np.ndarray, torch.Tensor, Sequence[Union[np.ndarray, torch.Tensor]]]
BGR_MEAN = (104.0, 117.0, 123.0)  # the mean RetinaFace was trained with, in BGR order


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
        num_threads: torch CPU threads of this process (None leaves torch's default).
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
    ) -> None:
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], but got {score_threshold}")
        if not 0.0 < nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1], but got {nms_iou}")
        if det_size is not None and det_size < 32:
            raise ValueError(f"det_size must be at least 32 pixels or None, but got {det_size}")
        if num_threads:
            torch.set_num_threads(num_threads)
        payload, self.model_id = registry.resolve(weights, "detector")
        self.device = resolve_device(device)
        self.half = resolve_half(half, self.device)
        self.score_threshold, self.nms_iou, self.det_size, self.min_face = score_threshold, nms_iou, det_size, min_face
        self.network = RetinaFace(payload["backbone"])
        self.network.load_state_dict(payload["state_dict"])
        self.network.eval().to(self.device, memory_format=torch.channels_last)
        if self.half:
            self.network.half()
        self._mean = torch.tensor(BGR_MEAN, device=self.device).reshape(1, 3, 1, 1)

    def info(self) -> dict:
        """What a remote caller needs to know about this detector (actors expose no attributes)."""
        return {"model_id": self.model_id, "device": str(self.device), "half": self.half}

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
        loc, conf, landmarks = self.network(batch.contiguous(memory_format=torch.channels_last))
        return self._postprocess(loc.float(), conf.float(), landmarks.float(), batch.shape[-2:], scales, shapes)

    def _prepare(self, frames: Frames) -> tuple[torch.Tensor | None, torch.Tensor, list[tuple[int, int]]]:
        """Frames -> one padded (N, 3, H, W) BGR-minus-mean tensor, per-frame (sx, sy) scales and sizes."""
        if isinstance(frames, (np.ndarray, torch.Tensor)):
            if frames.ndim != 4 or frames.shape[-1] != 3:
                raise ValueError(
                    f"frames must be a batch with shape (N, H, W, 3) or a list of frames, but got shape {tuple(frames.shape)}"
                )
        with warnings.catch_warnings():  # read-only arrays (e.g. from Ray's object store) are only read here
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            items = [torch.as_tensor(frame) for frame in frames]
        if not items:
            return None, torch.empty(0, 2), []
        tensors, scales, shapes = [], [], []
        for item in items:
            if item.ndim == 2:
                item = item[..., None].expand(-1, -1, 3)
            if item.ndim != 3 or item.shape[-1] != 3:
                raise ValueError(f"each frame must have shape (H, W, 3) or (H, W), but got {tuple(item.shape)}")
            height, width = item.shape[:2]
            image = item.to(self.device).permute(2, 0, 1).flip(0).unsqueeze(0).float()  # RGB -> BGR
            if self.det_size is not None and max(height, width) != self.det_size:
                factor = self.det_size / max(height, width)
                size = (max(1, round(height * factor)), max(1, round(width * factor)))
                image = F.interpolate(image, size=size, mode="bilinear", antialias=factor < 1, align_corners=False)
            scales.append((image.shape[-1] / width, image.shape[-2] / height))
            shapes.append((height, width))
            tensors.append(image - self._mean)
        out_h, out_w = max(t.shape[-2] for t in tensors), max(t.shape[-1] for t in tensors)
        batch = torch.cat([F.pad(t, (0, out_w - t.shape[-1], 0, out_h - t.shape[-2])) for t in tensors])
        return batch.half() if self.half else batch, torch.tensor(scales, device=self.device), shapes

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
