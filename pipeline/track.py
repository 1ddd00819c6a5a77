"""The tracker stage: the same face across processed frames, by ByteTrack (roboflow's ``trackers``).

ByteTrack predicts each face's box with a Kalman filter (constant velocity) and matches boxes to
predictions optimally (Hungarian on IoU), so an id survives missed detections, two faces crossing
and sparse sampling (``--fps 5`` of a walking person). A track ends when its face has not been seen
for ``lost_seconds``, at a shot cut (the caller names the frames that start a new shot), and when a face
jumps across the frame. Ids are per video (or stream), from 0, in order of first appearance.
"""

from __future__ import annotations

import math

import numpy as np
import supervision as sv
from trackers import ByteTrackTracker
from trackers.core.bytetrack.kalman_box_tracker import ByteTrackKalmanBoxTracker

from pipeline.results import FaceBatch

LOST_SECONDS = 2.0  # a face unseen this long ends its track
MIN_IOU = 0.1  # least overlap of a box with its track's predicted box


class FaceTracker:
    """Numbers the faces of one video's consecutive frames; feed batches in frame order.

    Args:
        frame_rate: processed frames per second (the video's rate, or the ``--fps`` sampling rate).
        lost_seconds: how long a face may go unseen and keep its id.
    """

    def __init__(self, *, frame_rate: float, lost_seconds: float = LOST_SECONDS) -> None:
        self.frame_rate, self.lost_seconds = frame_rate, lost_seconds
        self.reset()
        self._local: dict[int, int] = {}  # ByteTrack's process-wide id -> this video's id

    def reset(self) -> None:
        """Forget every track (a shot cut): the next faces start new tracks, with new ids."""
        # every face the detector kept starts or continues a track at once: thresholds at 0, one frame to mature;
        # ByteTrack keeps a lost track int(frame_rate / 30 * buffer) frames: at least one, however sparse the frames
        buffer = max(self.lost_seconds * 30, 30 / self.frame_rate)
        self._tracker = ByteTrackTracker(lost_track_buffer=math.ceil(buffer), frame_rate=self.frame_rate,
                                         track_activation_threshold=0.0, minimum_consecutive_frames=1,
                                         minimum_iou_threshold=MIN_IOU, high_conf_det_threshold=0.0)

    def update(self, xyxy: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        """Track ids (n,) for the n faces of the next processed frame, in their order."""
        tracker = self._tracker
        before = {id(track) for track in tracker.tracks}
        detections = sv.Detections(xyxy=np.asarray(xyxy, np.float32).reshape(-1, 4),
                                   confidence=np.asarray(confidence, np.float32), data={"face": np.arange(len(xyxy))})
        tracked = tracker.update(detections)
        # ByteTrack names a new track only when it is seen again: name it now, so its first face has it too
        spawned = [track for track in tracker.tracks if id(track) not in before]
        global_ids = np.asarray(tracked.tracker_id, np.int64).copy()
        new_rows = np.flatnonzero(global_ids == -1)
        if len(new_rows) != len(spawned):  # every unmatched face spawns a track (thresholds at 0)
            raise RuntimeError(f"ByteTrack left {len(new_rows)} faces untracked but started {len(spawned)} tracks")
        for row, track in zip(new_rows, spawned):
            track.tracker_id = ByteTrackKalmanBoxTracker.get_next_tracker_id()
            global_ids[row] = track.tracker_id
        ids = np.empty(len(xyxy), np.int64)
        ids[np.asarray(tracked.data.get("face", []), np.int64)] = [self._local.setdefault(int(g), len(self._local))
                                                                   for g in global_ids]
        return ids

    def update_with_faces(self, batch: FaceBatch, *, cuts: set[int] | frozenset[int] = frozenset()) -> FaceBatch:
        """``batch`` with the track id of each face (batches of one video must come in frame order); the
        tracker is reset before each frame whose index is in ``cuts`` (a new shot), so no track spans a cut."""
        ids = []
        for frame, start, end in zip(batch.frame_index.tolist(), *batch.face_ranges()):
            if frame in cuts:
                self.reset()
            ids.append(self.update(batch.xyxy[start:end], batch.det_score[start:end]))
        return batch.with_tracks(np.concatenate(ids) if ids else np.zeros(0, np.int64))
