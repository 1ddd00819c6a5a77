"""The tracker stage: the same face across consecutive processed frames, by box overlap."""

from __future__ import annotations

import numpy as np

from pipeline.results import FaceBatch


def _iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    top_left = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=-1)
    area_a = (boxes_a[:, 2:] - boxes_a[:, :2]).prod(axis=-1)
    area_b = (boxes_b[:, 2:] - boxes_b[:, :2]).prod(axis=-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


class IoUTracker:
    """Greedy IoU matching of each frame's faces to the tracks seen in recent frames.

    A face continues the track whose last box overlaps it most (IoU >= ``min_iou``); a track that
    has not been seen for more than ``max_gap`` processed frames ends (a missed detection or two
    does not split a track). Track ids count from 0 within a video, in order of first appearance.
    Feed frames in order: the tracker carries its state from one segment of a video to the next.
    """

    def __init__(self, *, min_iou: float = 0.3, max_gap: int = 5) -> None:
        self.min_iou, self.max_gap = min_iou, max_gap
        self._boxes = np.zeros((0, 4), np.float32)
        self._ids = np.zeros(0, np.int64)
        self._last_seen = np.zeros(0, np.int64)
        self._frame = 0
        self._next_id = 0

    def update(self, xyxy: np.ndarray) -> np.ndarray:
        """Track ids (n,) for the n faces of the next processed frame."""
        self._frame += 1
        alive = self._frame - self._last_seen <= self.max_gap + 1
        self._boxes, self._ids, self._last_seen = self._boxes[alive], self._ids[alive], self._last_seen[alive]
        ids = np.full(len(xyxy), -1, np.int64)
        if len(xyxy) and len(self._boxes):
            overlap = _iou(np.asarray(xyxy, np.float32), self._boxes)
            for flat in np.argsort(-overlap, axis=None):
                face, track = np.unravel_index(flat, overlap.shape)
                if overlap[face, track] < self.min_iou:
                    break
                if ids[face] == -1 and not np.isin(self._ids[track], ids):
                    ids[face] = self._ids[track]
        new = ids == -1
        ids[new] = np.arange(self._next_id, self._next_id + new.sum())
        self._next_id += int(new.sum())
        matched = np.isin(self._ids, ids)
        self._boxes = np.concatenate([self._boxes[~matched], np.asarray(xyxy, np.float32).reshape(-1, 4)])
        self._ids = np.concatenate([self._ids[~matched], ids])
        self._last_seen = np.concatenate([self._last_seen[~matched], np.full(len(ids), self._frame)])
        return ids

    def update_with_faces(self, batch: FaceBatch) -> FaceBatch:
        """``batch`` with the track id of each face (batches of one video must come in frame order)."""
        starts, ends = batch.face_ranges()
        ids = [self.update(batch.xyxy[start:end]) for start, end in zip(starts, ends)]
        return batch.with_tracks(np.concatenate(ids) if ids else np.zeros(0, np.int64))
