"""Which faces of a track are embedded: a few of its best, spread over its time, chosen as batches arrive.

Embedding costs ~5.5 ms of CPU a face (dlib's descriptor in onnxruntime, ``models.embedding``), against
~14 ms a frame for the rest of the path at 640x360, so only a bounded few faces per track are embedded: one
per second of track at most, ``SAMPLES_PER_TRACK`` in all. Two stages, because a
segment task knows the frames but not yet the tracks, and the per-video unit knows the tracks but no
longer the frames:

1. In the segment task, ``chip_candidates`` keeps, in each ``CANDIDATE_SECONDS`` of time, the best face of
   every place in the picture (the faces of that stretch that overlap a better one are dropped), and only
   those get a chip (``models.embedding.face_chips``, 67,500 bytes each): about two per face per second.
2. In the unit, each open track's ``TrackSamples`` keeps at most ``capacity`` of them, the best of each
   stretch of its time: stretches start ``bin_seconds`` long and double when the track outgrows them, so the
   samples cover the whole track (an identity switch inside it shows) and a track of any length holds
   ``capacity`` chips at most. ``TrackSampler`` does this for all tracks of a video and hands a track's
   samples over when it ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.embedding import CHIP_SIZE

CANDIDATE_SECONDS = 0.5  # a segment makes at most one chip per place in the picture per this many seconds
SAMPLES_PER_TRACK = 6  # the most faces of one track that are embedded
SAMPLE_BIN_SECONDS = 1.0  # a track's first samples are the best faces of stretches this long
SHARPNESS_HALF = 100.0  # Laplacian variance at which a crop counts half sharp (crops here: ~250-5,000)
MIN_OVERLAP = 0.3  # IoU above which two faces of one stretch are taken for the same place


def face_quality(det_score: np.ndarray, face_px: np.ndarray, yaw: np.ndarray, pitch: np.ndarray,
                 sharpness: np.ndarray) -> np.ndarray:
    """(n,) how good each face is for telling who it is, in [0, 1]: sure, large, frontal and sharp.

    The product of the detector score, the size up to the chip's (``face_px`` / 150, at most 1), the
    cosines of yaw and pitch, and ``sharpness / (sharpness + SHARPNESS_HALF)``.
    """
    size = np.clip(np.asarray(face_px, np.float64) / CHIP_SIZE, 0.0, 1.0)
    pose = np.clip(np.cos(np.radians(yaw)) * np.cos(np.radians(pitch)), 0.0, 1.0)
    sharp = np.maximum(np.asarray(sharpness, np.float64), 0.0)
    return (np.asarray(det_score, np.float64) * size * pose * sharp / (sharp + SHARPNESS_HALF)).astype(np.float32)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) intersection over union of (n, 4) and (m, 4) xyxy boxes."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def chip_candidates(pts_time: np.ndarray, xyxy: np.ndarray, quality: np.ndarray, *,
                    seconds: float = CANDIDATE_SECONDS) -> np.ndarray:
    """Rows of the faces of a segment that get a chip: per ``seconds`` of time, the best face of each place.

    Within each stretch of time the faces are taken best first, and a face that overlaps an already
    taken one by more than ``MIN_OVERLAP`` IoU is dropped (non-maximum suppression over time): a face
    moves little in half a second, two people rarely overlap that much.

    Args:
        pts_time: (n,) time of each face's frame, seconds.
        xyxy: (n, 4) boxes.
        quality: (n,) ``face_quality`` of each face.

    Returns:
        (c,) int64 rows, rising.
    """
    pts_time, xyxy, quality = np.asarray(pts_time), np.asarray(xyxy, np.float64), np.asarray(quality)
    stretch = np.floor(pts_time / seconds).astype(np.int64)
    kept: list[int] = []
    for value in np.unique(stretch):
        rows = np.flatnonzero(stretch == value)
        rows = rows[np.argsort(-quality[rows], kind="stable")]
        overlap = box_iou(xyxy[rows], xyxy[rows])
        taken: list[int] = []
        for i in range(len(rows)):
            if not taken or overlap[i, taken].max() <= MIN_OVERLAP:
                taken.append(i)
        kept += rows[taken].tolist()
    return np.array(sorted(kept), np.int64)


@dataclass
class Sample:
    """One face of a track that may be embedded."""

    time: float  # seconds
    frame_index: int
    quality: float
    chip: Any = field(repr=False)  # the (150, 150, 3) uint8 chip (or whatever the caller keeps for it)


class TrackSamples:
    """The best face of each stretch of one track's time, at most ``capacity`` of them, fed in time order.

    Args:
        capacity: most samples kept.
        bin_seconds: length of the first stretches; doubled whenever more than ``capacity`` are needed.
    """

    def __init__(self, capacity: int = SAMPLES_PER_TRACK, bin_seconds: float = SAMPLE_BIN_SECONDS) -> None:
        if capacity < 1 or bin_seconds <= 0:
            raise ValueError(f"capacity must be >= 1 and bin_seconds > 0, but got {capacity} and {bin_seconds}")
        self.capacity, self.bin_seconds = capacity, bin_seconds
        self.start: float | None = None
        self.last_time: float | None = None
        self._bins: dict[int, Sample] = {}

    def offer(self, sample: Sample) -> None:
        if self.start is None:
            self.start = sample.time
        self.last_time = sample.time
        self._keep(sample)
        while len(self._bins) > self.capacity:
            self.bin_seconds *= 2
            samples, self._bins = self._bins.values(), {}
            for kept in samples:
                self._keep(kept)

    def _keep(self, sample: Sample) -> None:
        index = math.floor((sample.time - self.start) / self.bin_seconds)
        if index not in self._bins or sample.quality > self._bins[index].quality:
            self._bins[index] = sample

    @property
    def samples(self) -> list[Sample]:
        """The kept samples in time order."""
        return sorted(self._bins.values(), key=lambda sample: sample.time)


class TrackSampler:
    """``TrackSamples`` for every open track of one video or stream, fed faces in frame order (the unit).

    Args:
        capacity, bin_seconds: as for ``TrackSamples``.
    """

    def __init__(self, capacity: int = SAMPLES_PER_TRACK, bin_seconds: float = SAMPLE_BIN_SECONDS) -> None:
        self.capacity, self.bin_seconds = capacity, bin_seconds
        self._open: dict[int, TrackSamples] = {}

    def offer(self, track_id: int, sample: Sample) -> None:
        if track_id not in self._open:
            self._open[track_id] = TrackSamples(self.capacity, self.bin_seconds)
        self._open[track_id].offer(sample)

    def seen(self, track_id: int, time: float) -> None:
        """A face of the track without a chip: it is still open at ``time``."""
        if track_id in self._open:
            self._open[track_id].last_time = time

    def pop(self, track_id: int) -> list[Sample]:
        """Hand over (and forget) one track's samples (none when it never had one)."""
        samples = self._open.pop(track_id, None)
        return samples.samples if samples is not None else []

    def samples(self, track_id: int) -> list[Sample]:
        """One open track's samples so far."""
        return self._open[track_id].samples if track_id in self._open else []

    def close_stale(self, now: float, lost_seconds: float) -> dict[int, list[Sample]]:
        """Hand over (and forget) the tracks unseen for more than ``lost_seconds`` before ``now``: ended."""
        stale = [track for track, samples in self._open.items() if now - samples.last_time > lost_seconds]
        return {track: self._open.pop(track).samples for track in stale}

    def close_all(self) -> dict[int, list[Sample]]:
        """Hand over every open track (at a shot cut, or at the end)."""
        closed = {track: samples.samples for track, samples in self._open.items()}
        self._open.clear()
        return closed

    def chips_held(self) -> int:
        return sum(len(samples.samples) for samples in self._open.values())
