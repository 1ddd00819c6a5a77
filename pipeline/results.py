"""``FaceBatch``: what the pipeline knows of a run of consecutive processed frames, as parallel arrays.

One type from the face step through the tracker to every sink, in batch and live mode alike: the
face step fills the frames and their faces, the tracker adds ``track_id``, live mode adds when each
frame was captured and how long it took.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from models.detections import check_shape

_FRAME_ARRAYS = ("frame_index", "pts_time")
_FACE_ARRAYS = ("face_frame", "xyxy", "det_score", "landmarks", "probabilities", "face_px", "yaw", "pitch", "sharpness")
_OPTIONAL_FRAME_ARRAYS = ("shot", "capture_time", "latency_ms")
_OPTIONAL_FACE_ARRAYS = ("track_id", "smoothed", "person_id")
NO_PERSON = -1  # person_id of a face whose track is no person (or not decided yet)
QUALITY = ("face_px", "yaw", "pitch", "sharpness")


@dataclass
class FaceBatch:
    """Per-frame and per-face results of consecutive processed frames of one video or stream, in frame order.

    Attributes:
        frame_index: (m,) int64 stream index of each processed frame (live: its sequence number).
        pts_time: (m,) float64 presentation time of each processed frame, seconds from the stream start.
        face_frame: (n,) int64 frame_index of each face; the faces of a frame are contiguous, by decreasing score.
        xyxy: (n, 4) float32 boxes in pixels of the display-oriented full frame.
        det_score: (n,) float32 detector confidence.
        landmarks: (n, 5, 2) float32 (x, y) of right eye, left eye, nose, right and left mouth corner.
        probabilities: (n, k) float32 emotion probabilities, columns in the classifier's label order.
        face_px, yaw, pitch, sharpness: (n,) float32 each, how usable each face is (``models.quality``):
            its crop's side in frame pixels, how far it is turned (degrees), the Laplacian variance of its crop.
        track_id: (n,) int64 track of each face, None until the tracker stage has run.
        smoothed: (n, k) float32 each face's probabilities smoothed over its track, once smoothed, else None.
        person_id: (n,) int64 person of each face's track (``NO_PERSON``: none, or not known yet), when
            persons are followed as the frames come (live), else None.
        chip_rows: (c,) int64 rising face rows that have an aligned chip for the face embedding, else None.
        chips: (c, 150, 150, 3) uint8 RGB those chips (``models.embedding.face_chips``), with ``chip_rows``.
        shot: (m,) int64 shot of each frame (0 until the first cut, +1 at each cut), once cuts are known, else None.
        capture_time: (m,) float64 seconds since the epoch when each frame was decoded (live), else None.
        latency_ms: (m,) float32 capture to result, milliseconds (live), else None.
        images: (m, h, w, 3) uint8 RGB frames at the detector input size, when kept for a preview, else None.
        image_scale: (4,) float32 full-frame pixels per ``images`` pixel (x, y, x, y), with ``images``.
    """

    frame_index: np.ndarray
    pts_time: np.ndarray
    face_frame: np.ndarray
    xyxy: np.ndarray
    det_score: np.ndarray
    landmarks: np.ndarray
    probabilities: np.ndarray
    face_px: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray
    sharpness: np.ndarray
    track_id: np.ndarray | None = None
    smoothed: np.ndarray | None = None
    person_id: np.ndarray | None = None
    chip_rows: np.ndarray | None = None
    chips: np.ndarray | None = field(default=None, repr=False)
    shot: np.ndarray | None = None
    capture_time: np.ndarray | None = None
    latency_ms: np.ndarray | None = None
    images: np.ndarray | None = field(default=None, repr=False)
    image_scale: np.ndarray | None = None

    def __post_init__(self) -> None:
        m, n = len(self.frame_index), len(self.face_frame)
        check_shape("pts_time", self.pts_time, (m,))
        check_shape("xyxy", self.xyxy, (n, 4))
        check_shape("det_score", self.det_score, (n,))
        check_shape("landmarks", self.landmarks, (n, 5, 2))
        check_shape("probabilities", self.probabilities, (n, None))
        for name in QUALITY:
            check_shape(name, getattr(self, name), (n,))
        for name, value, shape in (("track_id", self.track_id, (n,)), ("smoothed", self.smoothed, (n, None)),
                                   ("person_id", self.person_id, (n,)), ("shot", self.shot, (m,)),
                                   ("capture_time", self.capture_time, (m,)), ("latency_ms", self.latency_ms, (m,))):
            if value is not None:
                check_shape(name, value, shape)

    def __len__(self) -> int:
        """The number of faces."""
        return len(self.face_frame)

    @property
    def num_frames(self) -> int:
        return len(self.frame_index)

    @property
    def nbytes(self) -> int:
        """Bytes of its arrays (what moving it to another process costs, before serialization's framing)."""
        return sum(value.nbytes for value in vars(self).values() if isinstance(value, np.ndarray))

    def face_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """Start and end (exclusive) of each processed frame's faces in the face arrays."""
        return (np.searchsorted(self.face_frame, self.frame_index, side="left"),
                np.searchsorted(self.face_frame, self.frame_index, side="right"))

    def faces_per_frame(self) -> np.ndarray:
        starts, ends = self.face_ranges()
        return (ends - starts).astype(np.int32)

    def split(self, frames: int) -> tuple["FaceBatch", "FaceBatch"]:
        """(the first ``frames`` processed frames with their faces, the rest); previews are not kept."""
        faces = int(self.face_ranges()[0][frames]) if frames < self.num_frames else len(self)
        head, tail = {}, {}
        for name in _FRAME_ARRAYS + _FACE_ARRAYS + _OPTIONAL_FRAME_ARRAYS + _OPTIONAL_FACE_ARRAYS:
            value, cut = getattr(self, name), frames if name in _FRAME_ARRAYS + _OPTIONAL_FRAME_ARRAYS else faces
            head[name], tail[name] = (None, None) if value is None else (value[:cut], value[cut:])
        if self.chip_rows is not None:
            first = int(np.searchsorted(self.chip_rows, faces))
            head |= {"chip_rows": self.chip_rows[:first], "chips": self.chips[:first]}
            tail |= {"chip_rows": self.chip_rows[first:] - faces, "chips": self.chips[first:]}
        return FaceBatch(**head), FaceBatch(**tail)

    def with_tracks(self, track_id: np.ndarray) -> "FaceBatch":
        return replace(self, track_id=np.asarray(track_id, np.int64))

    def with_smoothed(self, smoothed: np.ndarray) -> "FaceBatch":
        return replace(self, smoothed=np.asarray(smoothed, np.float32))

    @classmethod
    def empty(cls, num_labels: int) -> "FaceBatch":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.int64), np.zeros((0, 4), np.float32),
                   np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32), np.zeros((0, num_labels), np.float32),
                   *(np.zeros(0, np.float32) for _ in QUALITY))

    @classmethod
    def concatenate(cls, parts: list["FaceBatch"], num_labels: int) -> "FaceBatch":
        """One batch of consecutive parts (previews are not kept; optional arrays only when every part has them,
        chips whenever any part has some)."""
        parts = [part for part in parts if part.num_frames or len(part)] or parts[:1]  # empty ones add nothing
        if not parts:
            return cls.empty(num_labels)
        arrays = {name: np.concatenate([getattr(p, name) for p in parts]) for name in _FRAME_ARRAYS + _FACE_ARRAYS}
        for name in _OPTIONAL_FACE_ARRAYS + _OPTIONAL_FRAME_ARRAYS:
            if all(getattr(p, name) is not None for p in parts):
                arrays[name] = np.concatenate([getattr(p, name) for p in parts])
        with_chips = [(offset, p) for offset, p in zip(np.cumsum([0] + [len(p) for p in parts]), parts)
                      if p.chip_rows is not None]
        if with_chips:  # a part without chips has none to add
            arrays["chip_rows"] = np.concatenate([p.chip_rows + offset for offset, p in with_chips]).astype(np.int64)
            arrays["chips"] = np.concatenate([p.chips for _, p in with_chips])
        return cls(**arrays)
