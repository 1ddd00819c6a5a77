"""Live mode: the newest frame of a camera through the same detector and classifier as batch mode.

One frame at a time, for latency rather than throughput: the reader hands over its newest frame,
the detector sees it resized to ``det_size``, faces are cropped from the full-resolution luma and
classified, the tracker numbers them, and every sink gets the result with its capture time and
capture-to-result latency. The models run in this process by default, or as Ray actors (the very
classes batch mode uses) when a cluster address is given.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

import numpy as np

from models import EmotionClassifier, FaceDetector
from models.checkpoint import Preprocess
from models.detections import Detections
from models.emotion.crop import crop_faces
from models.registry import DEFAULT_DETECTOR, DEFAULT_EMOTION_MODEL
from pipeline.preview import PreviewServer
from pipeline.results import SegmentResult
from pipeline.sinks.live_parquet import RollingPartsWriter
from pipeline.sources.live import LiveFrame, LiveReader, LiveSourceOptions, live_info
from pipeline.stages import detector_input_size
from pipeline.track import IoUTracker

LATENCY_WINDOW = 100_000  # latency percentiles are over at most this many recent frames


@dataclass(frozen=True)
class LiveOptions:
    """Model and detection options of live mode (those of ``emoray run`` that apply to one frame)."""

    detector: str = DEFAULT_DETECTOR
    emotion_model: str = DEFAULT_EMOTION_MODEL
    det_size: int | None = 640
    score_threshold: float = 0.6
    min_face: float = 0.0
    device: str = "auto"


class Models(Protocol):
    labels: list[str]
    crop_spec: Preprocess

    def detect(self, image: np.ndarray) -> Detections: ...

    def classify(self, crops: np.ndarray) -> np.ndarray: ...

    def model_ids(self) -> dict[str, str]: ...


class LocalModels:
    """The detector and classifier in this process (the default: no hop between processes)."""

    def __init__(self, options: LiveOptions) -> None:
        self.detector = FaceDetector(options.detector, device=options.device, score_threshold=options.score_threshold,
                                     det_size=None)
        self.classifier = EmotionClassifier(options.emotion_model, device=options.device)
        self.labels, self.crop_spec = self.classifier.labels, self.classifier.preprocess

    def detect(self, image: np.ndarray) -> Detections:
        return self.detector([image])[0]

    def classify(self, crops: np.ndarray) -> np.ndarray:
        return self.classifier(crops)

    def model_ids(self) -> dict[str, str]:
        return {"detector": self.detector.model_id, "emotion_model": self.classifier.model_id}


class ActorModels:
    """The same classes as Ray actors, on the cluster ``pipeline.cluster.connect`` joined."""

    def __init__(self, options: LiveOptions) -> None:
        import ray

        self._ray = ray
        gpu = {"num_gpus": 0.5} if ray.cluster_resources().get("GPU") else {}
        self.detector = ray.remote(FaceDetector).options(num_cpus=1, **gpu).remote(
            options.detector, device=options.device, score_threshold=options.score_threshold, det_size=None)
        self.classifier = ray.remote(EmotionClassifier).options(num_cpus=0.25, **gpu).remote(
            options.emotion_model, device=options.device, num_threads=1)
        detector_info, classifier_info = ray.get([self.detector.info.remote(), self.classifier.info.remote()])
        self.labels, self.crop_spec = classifier_info["labels"], Preprocess.from_dict(classifier_info["preprocess"])
        self._ids = {"detector": detector_info["model_id"], "emotion_model": classifier_info["model_id"]}

    def detect(self, image: np.ndarray) -> Detections:
        return self._ray.get(self.detector.__call__.remote(image[None]))[0]

    def classify(self, crops: np.ndarray) -> np.ndarray:
        return self._ray.get(self.classifier.__call__.remote(crops))

    def model_ids(self) -> dict[str, str]:
        return dict(self._ids)


@dataclass
class LiveResult:
    """One processed frame: its faces in full-resolution pixels, tracked, with timing."""

    source: str
    sequence: int
    pts_time: float
    capture_time: float  # when the frame was decoded, seconds since the epoch
    latency_ms: float  # capture to result
    xyxy: np.ndarray
    det_score: np.ndarray
    landmarks: np.ndarray
    probabilities: np.ndarray
    track_ids: np.ndarray
    preview: np.ndarray  # RGB at the detector input size
    preview_scale: np.ndarray  # full-resolution pixels per preview pixel (x, y, x, y)

    def segment(self) -> SegmentResult:
        n = len(self.xyxy)
        return SegmentResult(np.array([self.sequence]), np.array([self.pts_time]), np.full(n, self.sequence),
                             self.xyxy, self.det_score, self.landmarks, self.probabilities)

    def faces(self, labels: list[str]) -> list[dict]:
        best = self.probabilities.argmax(axis=1) if len(self.probabilities) else []
        return [{"face_index": i, "track_id": int(self.track_ids[i]), "box": [round(float(v), 1) for v in self.xyxy[i]],
                 "det_score": round(float(self.det_score[i]), 4), "emotion": labels[int(best[i])],
                 "emotion_score": round(float(self.probabilities[i, best[i]]), 4),
                 "probabilities": {label: round(float(p), 4) for label, p in zip(labels, self.probabilities[i])}}
                for i in range(len(self.xyxy))]

    def record(self, labels: list[str]) -> dict:
        """The JSON-lines record: frame, times and faces."""
        return {"source": self.source, "frame": self.sequence, "pts_time": round(self.pts_time, 4),
                "capture_time": round(self.capture_time, 4), "latency_ms": round(self.latency_ms, 2),
                "faces": self.faces(labels)}


class LiveSink(Protocol):
    def write(self, result: LiveResult) -> None: ...

    def close(self) -> None: ...


class JsonLinesSink:
    """One JSON object per processed frame, flushed at once (for ``| jq`` and other pipes)."""

    def __init__(self, labels: list[str], stream: TextIO = sys.stdout) -> None:
        self.labels, self.stream = labels, stream

    def write(self, result: LiveResult) -> None:
        self.stream.write(json.dumps(result.record(self.labels)) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


class ParquetSink:
    """Parts rolled every ``roll_seconds`` under OUT (see ``pipeline.sinks.live_parquet``)."""

    def __init__(self, writer: RollingPartsWriter) -> None:
        self.writer = writer

    def write(self, result: LiveResult) -> None:
        self.writer.write(result.segment(), result.track_ids, result.capture_time, result.latency_ms)

    def close(self) -> None:
        self.writer.close()


class PreviewSink:
    """Feeds the ``--serve`` page: the preview-size picture with boxes scaled to it, and the face list."""

    def __init__(self, server: PreviewServer, labels: list[str]) -> None:
        self.server, self.labels = server, labels

    def write(self, result: LiveResult) -> None:
        state = {"frame": result.sequence, "latency_ms": result.latency_ms, "faces": result.faces(self.labels)}
        self.server.publish(result.sequence, result.preview, result.xyxy / result.preview_scale,
                            result.probabilities, result.track_ids, state)

    def close(self) -> None:
        self.server.close()


@dataclass
class LiveStats:
    """What a live run did; printed at the end and returned by ``LiveSession.run``."""

    source: str
    seconds: float = 0.0
    received: int = 0
    processed: int = 0
    dropped: int = 0
    reconnects: int = 0
    faces: int = 0
    latency_ms: dict = field(default_factory=dict)  # p50, p95, max
    error: str | None = None
    parts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        latency = self.latency_ms
        text = (f"{self.source}: {self.seconds:.1f} s, frames received {self.received}, processed {self.processed}, "
                f"dropped {self.dropped}, reconnects {self.reconnects}, faces {self.faces}")
        if latency:
            text += f"\nlatency capture to result: p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms, max {latency['max']:.1f} ms"
        if self.parts:
            text += f"\nParquet parts written: {len(self.parts) // 2}"
        if self.error:
            text += f"\nerror: {self.error}"
        return text


class LiveSession:
    """Runs a reader's frames through the models into the sinks until stopped, the duration ends, or the source fails."""

    def __init__(self, reader: LiveReader, models: Models, sinks: list[LiveSink], *, det_size: int | None = 640,
                 min_face: float = 0.0) -> None:
        self.reader, self.models, self.sinks = reader, models, sinks
        self.det_size, self.min_face = det_size, min_face
        self.tracker = IoUTracker()
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.max_latency = 0.0
        self.stats = LiveStats(reader.name)

    def warm_up(self, size_wh: tuple[int, int] = (640, 360)) -> None:
        """Run the models once on a blank frame, so the first real frame does not pay for lazy set-up."""
        self.models.detect(np.zeros((size_wh[1], size_wh[0], 3), np.uint8))
        size = self.models.crop_spec.input_size
        self.models.classify(np.zeros((1, size, size) + ((3,) if self.models.crop_spec.channels == 3 else ()), np.uint8))

    def process(self, frame: LiveFrame) -> LiveResult:
        """Detect, crop, classify and track the faces of one frame."""
        info = live_info(frame, self.reader)
        width, height = detector_input_size(info, self.det_size)
        small = frame.decoded.to_rgb(info.rotation, (width, height))
        scale = np.array([info.width / width, info.height / height] * 2, np.float32)
        detections = self.models.detect(small)
        keep = detections.side * min(scale[0], scale[1]) >= self.min_face
        xyxy = (detections.xyxy[keep] * scale).astype(np.float32)
        crop_spec = self.models.crop_spec
        if len(xyxy):
            full = frame.decoded.to_gray(info.rotation) if crop_spec.channels == 1 else frame.decoded.to_rgb(info.rotation)
            probabilities = self.models.classify(crop_faces(full, xyxy, crop_spec))
        else:
            probabilities = np.zeros((0, len(self.models.labels)), np.float32)
        track_ids = self.tracker.update(xyxy)
        latency_ms = (time.time() - frame.capture_time) * 1000.0
        return LiveResult(self.reader.name, frame.sequence, frame.decoded.pts_time, frame.capture_time, latency_ms, xyxy,
                          detections.confidence[keep], (detections.landmarks[keep] * scale[:2]).astype(np.float32),
                          probabilities, track_ids, small, scale)

    def run(self, stop: threading.Event | None = None, duration: float | None = None) -> LiveStats:
        """Process until ``stop`` is set, ``duration`` seconds pass, or the source ends; then flush the sinks."""
        stop = stop or threading.Event()
        started = time.monotonic()
        try:
            while not stop.is_set():
                remaining = None if duration is None else duration - (time.monotonic() - started)
                if remaining is not None and remaining <= 0:
                    break
                frame = self.reader.take(timeout=min(0.5, remaining) if remaining is not None else 0.5)
                if frame is None:
                    if self.reader.ended:
                        break
                    continue
                result = self.process(frame)
                self._record(result)
                for sink in self.sinks:
                    sink.write(result)
        finally:
            self.reader.close()
            for sink in self.sinks:
                sink.close()
            self.stats.seconds = time.monotonic() - started
            self._finish()
        return self.stats

    def _record(self, result: LiveResult) -> None:
        self.stats.processed += 1
        self.stats.faces += len(result.xyxy)
        self.latencies.append(result.latency_ms)
        self.max_latency = max(self.max_latency, result.latency_ms)

    def _finish(self) -> None:
        stats, reader = self.stats, self.reader
        stats.received, stats.dropped, stats.reconnects = reader.received, reader.dropped, reader.reconnects
        stats.error = str(reader.error) if reader.error else None
        if self.latencies:
            values = np.fromiter(self.latencies, float)
            stats.latency_ms = {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)),
                                "max": self.max_latency}
        stats.parts = [path for sink in self.sinks if isinstance(sink, ParquetSink) for path in sink.writer.paths]


def open_session(source: str, out: Path | None, options: LiveOptions, *,
                 reader_options: LiveSourceOptions = LiveSourceOptions(), jsonl: bool = False,
                 serve: tuple[str, int] | None = None, roll_seconds: float = 10.0, use_ray: bool = False,
                 jsonl_stream: TextIO = sys.stdout) -> tuple[LiveSession, PreviewServer | None]:
    """Everything ``emoray live`` needs, wired: reader, models, sinks. The reader is not started yet."""
    reader = LiveReader(source, reader_options)
    models = ActorModels(options) if use_ray else LocalModels(options)
    sinks: list[LiveSink] = []
    if out is not None:
        metadata = {"models": models.model_ids(), "options": asdict(options), "source": reader.name}
        sinks.append(ParquetSink(RollingPartsWriter(out, reader.name, models.labels, metadata, roll_seconds)))
    if jsonl:
        sinks.append(JsonLinesSink(models.labels, jsonl_stream))
    server = None
    if serve is not None:
        server = PreviewServer(serve[0], serve[1], models.labels, reader.name).start()
        sinks.append(PreviewSink(server, models.labels))
    session = LiveSession(reader, models, sinks, det_size=options.det_size, min_face=options.min_face)
    session.warm_up()
    return session, server
