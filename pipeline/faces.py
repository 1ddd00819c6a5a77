"""The face step, written once for batch, live and the bench: decoded frames in, their faces out.

detect on the frame resized to ``det_size`` -> boxes and landmarks scaled back to the full frame ->
``min_face`` filter -> crops at full resolution -> classify. The models are any ``Models`` (in this
process or Ray actors); ``submit`` starts detection and ``finish`` completes a batch, so a caller
may keep several batches in flight while it decodes the next.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from models import quality
from models.detections import Detections
from models.embedding import CHIP_SIZE, face_chips
from models.emotion.crop import crop_faces
from pipeline.inference import Models, Pending
from pipeline.persons.sampling import CANDIDATE_SECONDS, chip_candidates, face_quality
from pipeline.results import FaceBatch
from pipeline.sources.file import DecodedFrame, VideoInfo


def detector_input_size(info: VideoInfo, det_size: int | None) -> tuple[int, int]:
    """(width, height) frames are resized to before detection: longer side ``det_size``, aspect kept."""
    if det_size is None:
        return info.width, info.height
    scale = det_size / max(info.width, info.height)
    return max(1, round(info.width * scale)), max(1, round(info.height * scale))


@dataclass
class Located:
    """The faces of a batch of frames, before classification: boxes per frame (full-frame pixels), their
    landmarks and detector scores, and their crops for the classifier."""

    boxes: list[np.ndarray]
    landmarks: np.ndarray
    scores: np.ndarray
    crops: np.ndarray


@dataclass
class PendingFaces:
    """A batch of frames whose detection is under way."""

    frames: list[DecodedFrame]
    detections: Pending[list[Detections]]
    small: np.ndarray | None  # (m, h, w, 3) RGB at the detector input size, kept for a preview


class FaceStep:
    """Finds and classifies the faces of frames of one video or stream (``info``: size and rotation).

    Args:
        models: the detector and classifier, in this process or as Ray actors.
        info: the video's display size and rotation (every frame of it has them).
        det_size: longer side of the detector input in pixels; None detects at full resolution.
        min_face: faces whose shorter box side is below this many pixels of the full frame are dropped.
        keep_frames: keep the detector-size RGB frames in each result (``FaceBatch.images``), for a preview.
        chips: cut aligned chips of a bounded few faces (``FaceBatch.chips``), for the persons' face embeddings.
    """

    def __init__(self, models: Models, info: VideoInfo, *, det_size: int | None, min_face: float = 0.0,
                 keep_frames: bool = False, chips: bool = False) -> None:
        self.models, self.info, self.min_face, self.keep_frames, self.chips = models, info, min_face, keep_frames, chips
        self.input_wh = detector_input_size(info, det_size)
        self.scale = np.array([info.width / self.input_wh[0], info.height / self.input_wh[1]] * 2, np.float32)
        self._chipped = -np.inf  # the last stretch of CANDIDATE_SECONDS whose faces were offered for chips

    def __call__(self, frames: list[DecodedFrame]) -> FaceBatch:
        if not frames:
            return FaceBatch.empty(len(self.models.labels))
        return self.finish(self.submit(frames))

    def submit(self, frames: list[DecodedFrame]) -> PendingFaces:
        """Resize the frames for the detector (swscale) and start detecting."""
        small = np.stack([frame.to_rgb(self.info.rotation, self.input_wh) for frame in frames])
        return PendingFaces(frames, self.models.detect(small), small if self.keep_frames else None)

    def finish(self, pending: PendingFaces) -> FaceBatch:
        """Scale and filter the detections, crop the faces from the full frames and classify them."""
        located = self.locate(pending.frames, pending.detections.result())
        crops = located.crops
        probabilities = (self.models.classify(crops) if len(crops)
                         else np.zeros((0, len(self.models.labels)), np.float32))
        return self.assemble(pending, located, probabilities)

    def locate(self, frames: list[DecodedFrame], detections: list[Detections]) -> "Located":
        """The faces the detector found, in full-frame pixels, past the ``min_face`` filter, and their crops."""
        scale = self.scale
        keep = [faces.side * min(scale[0], scale[1]) >= self.min_face for faces in detections]
        boxes = [(faces.xyxy[mask] * scale).astype(np.float32) for faces, mask in zip(detections, keep)]
        crops = np.concatenate([crop_faces(self._full(frame), xyxy, self.models.crop_spec)
                                for frame, xyxy in zip(frames, boxes) if len(xyxy)] or [np.zeros(0, np.uint8)])
        landmarks = np.concatenate([faces.landmarks[mask] * scale[:2] for faces, mask in zip(detections, keep)]
                                   ).astype(np.float32).reshape(-1, 5, 2)
        scores = np.concatenate([faces.confidence[mask] for faces, mask in zip(detections, keep)]).astype(np.float32)
        return Located(boxes, landmarks, scores, crops)

    def assemble(self, pending: PendingFaces, located: "Located", probabilities: np.ndarray) -> FaceBatch:
        """The ``FaceBatch`` of located faces and their emotion probabilities (and chips, when asked)."""
        frames = pending.frames
        xyxy = np.concatenate(located.boxes).reshape(-1, 4)
        yaw, pitch = quality.head_pose(located.landmarks)
        batch = FaceBatch(
            frame_index=np.array([f.index for f in frames], np.int64),
            pts_time=np.array([f.pts_time for f in frames], np.float64),
            face_frame=np.repeat([f.index for f in frames], [len(b) for b in located.boxes]).astype(np.int64),
            xyxy=xyxy, det_score=located.scores, landmarks=located.landmarks, probabilities=probabilities,
            face_px=quality.face_px(xyxy, self.models.crop_spec), yaw=yaw, pitch=pitch,
            sharpness=quality.sharpness(located.crops),
            images=pending.small, image_scale=self.scale if self.keep_frames else None,
        )
        return self._with_chips(batch, frames) if self.chips else batch

    def _with_chips(self, batch: FaceBatch, frames: list[DecodedFrame]) -> FaceBatch:
        """``batch`` with aligned chips of a bounded few faces: per stretch of ``CANDIDATE_SECONDS``, the best
        face of each place (``chip_candidates``) among the faces of the first batch that reaches the stretch."""
        times = np.repeat(batch.pts_time, batch.faces_per_frame())
        stretch = np.floor(times / CANDIDATE_SECONDS)
        fresh = np.flatnonzero(stretch > self._chipped)
        if len(stretch):
            self._chipped = max(self._chipped, float(stretch.max()))
        goodness = face_quality(batch.det_score, batch.face_px, batch.yaw, batch.pitch, batch.sharpness)
        rows = fresh[chip_candidates(times[fresh], batch.xyxy[fresh], goodness[fresh])]
        chips = [face_chips(frame.to_rgb(self.info.rotation), batch.landmarks[rows[batch.face_frame[rows] == frame.index]])
                 for frame in frames if (batch.face_frame[rows] == frame.index).any()]
        return replace(batch, chip_rows=rows,
                       chips=np.concatenate(chips) if chips else np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8))

    def _full(self, frame: DecodedFrame) -> np.ndarray:
        """The full-resolution frame the classifier's crops are cut from (gray luma or RGB)."""
        if self.models.crop_spec.channels == 1:
            return frame.to_gray(self.info.rotation)
        return frame.to_rgb(self.info.rotation)


def find_faces(work: list[tuple[FaceStep, list[DecodedFrame]]]) -> list[FaceBatch]:
    """The faces of several streams' frames at once (live mode's newest frame of each camera): one detector
    call per detector input size, one classifier call for every face; each stream's ``FaceBatch`` in order."""
    if not work:
        return []
    models = work[0][0].models
    smalls = [np.stack([frame.to_rgb(step.info.rotation, step.input_wh) for frame in frames]) for step, frames in work]
    detections: list[list[Detections] | None] = [None] * len(work)
    for shape in {small.shape[1:] for small in smalls}:
        members = [i for i, small in enumerate(smalls) if small.shape[1:] == shape]
        found = models.detect(np.concatenate([smalls[i] for i in members])).result()
        for i in members:
            detections[i], found = found[:len(smalls[i])], found[len(smalls[i]):]
    located = [step.locate(frames, found) for (step, frames), found in zip(work, detections)]
    crops = np.concatenate([where.crops for where in located if len(where.crops)] or [np.zeros(0, np.uint8)])
    probabilities = (models.classify(crops) if len(crops) else np.zeros((0, len(models.labels)), np.float32))
    results, at = [], 0
    for (step, frames), small, where in zip(work, smalls, located):
        pending = PendingFaces(frames, None, small if step.keep_frames else None)
        results.append(step.assemble(pending, where, probabilities[at:at + len(where.crops)]))
        at += len(where.crops)
    return results
