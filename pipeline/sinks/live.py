"""Where live results go besides Parquet parts: JSON lines on a pipe and the ``--serve`` preview page.

Every sink takes the tracked ``FaceBatch`` of one processed frame (``write``) and finishes on ``close``;
the Parquet parts are ``pipeline.sinks.live_parquet.RollingPartsWriter``.
"""

from __future__ import annotations

import json
import sys
from typing import Protocol, TextIO

from pipeline.preview import PreviewServer
from pipeline.results import NO_PERSON, FaceBatch


class LiveSink(Protocol):
    def write(self, batch: FaceBatch) -> None: ...

    def close(self) -> None: ...


def face_records(batch: FaceBatch, labels: list[str]) -> list[dict]:
    """Each face of a one-frame batch as JSON-ready values: box, track, emotion and probabilities."""
    best = batch.probabilities.argmax(axis=1) if len(batch) else []
    return [{"face_index": i, "track_id": int(batch.track_id[i]),
             "person_id": None if batch.person_id is None or batch.person_id[i] == NO_PERSON else int(batch.person_id[i]),
             "box": [round(float(v), 1) for v in batch.xyxy[i]],
             "det_score": round(float(batch.det_score[i]), 4), "emotion": labels[int(best[i])],
             "emotion_score": round(float(batch.probabilities[i, best[i]]), 4),
             **({"smoothed_emotion": labels[int(batch.smoothed[i].argmax())],
                 "smoothed_score": round(float(batch.smoothed[i].max()), 4)} if batch.smoothed is not None else {}),
             "probabilities": {label: round(float(p), 4) for label, p in zip(labels, batch.probabilities[i])}}
            for i in range(len(batch))]


def frame_record(batch: FaceBatch, labels: list[str], source: str) -> dict:
    """The JSON-lines record of a one-frame batch: frame, times and faces."""
    return {"source": source, "frame": int(batch.frame_index[0]), "pts_time": round(float(batch.pts_time[0]), 4),
            "capture_time": round(float(batch.capture_time[0]), 4), "latency_ms": round(float(batch.latency_ms[0]), 2),
            "faces": face_records(batch, labels)}


class JsonLinesSink:
    """One JSON object per processed frame, flushed at once (for ``| jq`` and other pipes)."""

    def __init__(self, labels: list[str], source: str, stream: TextIO = sys.stdout) -> None:
        self.labels, self.source, self.stream = labels, source, stream

    def write(self, batch: FaceBatch) -> None:
        self.stream.write(json.dumps(frame_record(batch, self.labels, self.source)) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


class PreviewSink:
    """Feeds one source's place on the ``--serve`` page: the detector-size picture with boxes scaled to it, and
    the face list. The page's server is closed by whoever started it, once every source is done."""

    def __init__(self, server: PreviewServer, labels: list[str], *, slot: int = 0) -> None:
        self.server, self.labels, self.slot = server, labels, slot

    def write(self, batch: FaceBatch) -> None:
        frame = int(batch.frame_index[0])
        state = {"frame": frame, "latency_ms": float(batch.latency_ms[0]), "faces": face_records(batch, self.labels)}
        self.server.publish(frame, batch.images[0], batch.xyxy / batch.image_scale, batch.probabilities,
                            batch.track_id, state, slot=self.slot)

    def close(self) -> None:
        """Nothing to flush: the page keeps showing the last frame until the server closes."""
