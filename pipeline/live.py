"""Live mode: the newest frame of a camera through the face step and the tracker that batch mode uses.

One frame at a time, for latency rather than throughput: the reader hands over its newest frame (a
file without ``--realtime``: every frame, in order), the face step finds and classifies its faces, the
tracker numbers them, a causal moving average smooths each track's emotions, and every sink gets the result with its capture time and capture-to-result
latency. The models run in this process by default, or as Ray actors (the very classes batch mode
uses) when a cluster address is given.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator, TextIO

import numpy as np

from jobs.spec import ModelOptions
from models.embedding import CHIP_SIZE
from pipeline.faces import FaceStep
from pipeline.path import FacePath
from pipeline.persons.follow import LivePersons
from pipeline.inference import ActorModels, ClusterPlan, LocalModels, Models
from pipeline.preview import PreviewServer
from pipeline.results import FaceBatch
from pipeline.sinks.live import JsonLinesSink, LiveSink, PreviewSink
from pipeline.shots import ShotCutter, frame_signature
from pipeline.sinks.live_parquet import RollingPartsWriter
from pipeline.sources.file import VideoInfo
from pipeline.sources.live import LiveFrame, LiveReader, LiveSourceOptions, live_info
from pipeline.stopping import StopRequest
from pipeline.track import LOST_SECONDS

log = logging.getLogger(__name__)

LATENCY_WINDOW = 100_000  # latency percentiles are over at most this many recent frames
LIVE_FRAME_RATE = 25.0  # what the tracker assumes of a camera (its lost-track buffer is in frames)


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
    """Runs a reader's frames through the face step and the tracker, until stopped, the duration ends, or
    the source ends or fails; ``results()`` yields each tracked frame, ``run()`` feeds them to the sinks."""

    def __init__(self, reader: LiveReader, models: Models, sinks: list[LiveSink], options: ModelOptions, *,
                 keep_frames: bool = False) -> None:
        self.reader, self.models, self.sinks, self.options = reader, models, sinks, options
        self.keep_frames = keep_frames
        # a file's own frame rate, as batch mode; causal smoothing: each frame's rows are final at once
        persons = LivePersons(models.embed, LOST_SECONDS) if options.persons != "off" else None
        self.path = FacePath(sinks, num_labels=len(models.labels), frame_rate=reader.fps or LIVE_FRAME_RATE,
                             smoothing_seconds=options.smoothing_seconds, causal=True, persons=persons)
        self.shots = ShotCutter()
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.max_latency = 0.0
        self.stats = LiveStats(reader.name)
        self._step: FaceStep | None = None
        self._closed = False

    def warm_up(self, size_wh: tuple[int, int] = (640, 360)) -> None:
        """Run the models once on a blank frame, so the first real frame does not pay for lazy set-up."""
        self.models.detect(np.zeros((1, size_wh[1], size_wh[0], 3), np.uint8)).result()
        spec = self.models.crop_spec
        self.models.classify(np.zeros((1, spec.input_size, spec.input_size) + ((3,) if spec.channels == 3 else ()), np.uint8))
        if self.options.persons != "off":
            self.models.embed(np.zeros((1, CHIP_SIZE, CHIP_SIZE, 3), np.uint8))

    def process(self, frame: LiveFrame) -> FaceBatch:
        """The faces of one frame, tracked and smoothed over their tracks so far, with its capture time and
        latency (capture to classified faces); the sinks have it when this returns."""
        step = self._face_step(live_info(frame, self.reader))
        faces = step([frame.decoded])
        decoded = frame.decoded
        cut = self.shots.update_frame(decoded.index, decoded.pts_time, frame_signature(decoded))
        faces = replace(faces, capture_time=np.array([frame.capture_time], np.float64),
                        latency_ms=np.array([(time.time() - frame.capture_time) * 1000.0], np.float32),
                        shot=np.array([len(self.shots.cut_frames)], np.int64))
        # a file's clock is its timestamps (a replay smooths as the recording ran); a camera's is when frames arrive
        clock = frame.capture_time if self.reader.stream else decoded.pts_time
        return self.path.write(faces, cuts={decoded.index} if cut else set(), clock=np.array([clock], np.float64))

    def results(self, stop: StopRequest | threading.Event | None = None,
                duration: float | None = None) -> Iterator[FaceBatch]:
        """Each processed frame's tracked faces, as they come, until stopped, ``duration`` or the end of the source."""
        stop = stop or threading.Event()
        started = time.monotonic()
        while not stop.is_set():
            remaining = None if duration is None else duration - (time.monotonic() - started)
            if remaining is not None and remaining <= 0:
                break
            frame = self.reader.take(timeout=min(0.5, remaining) if remaining is not None else 0.5)
            if frame is None and self.reader.ended:
                frame = self.reader.take(timeout=0)  # the last frame may have come with the end
                if frame is None:
                    break
            if frame is None:
                continue
            batch = self.process(frame)
            self._record(batch)
            yield batch

    def run(self, stop: StopRequest | threading.Event | None = None, duration: float | None = None) -> LiveStats:
        """Process until stopped (every result goes to the sinks); then flush them and return what was done."""
        started = time.monotonic()
        try:
            for _ in self.results(stop, duration):
                pass
        finally:
            self.close()
            self.stats.seconds = time.monotonic() - started
        return self.stats

    def close(self) -> None:
        """Stop the reader, close the sinks and complete the stats (once)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.reader.close()
            try:
                self.path.close()
            except Exception as error:  # noqa: BLE001  (e.g. a closed pipe: the other sinks still closed)
                log.warning("closing the live outputs: %s", error)
        finally:
            self.models.close()
            self._finish()

    def _face_step(self, info: VideoInfo) -> FaceStep:
        step = self._step
        if step is None or (step.info.width, step.info.height, step.info.rotation) != (info.width, info.height, info.rotation):
            step = self._step = FaceStep(self.models, info, det_size=self.options.det_size,
                                         min_face=self.options.min_face, keep_frames=self.keep_frames,
                                         chips=self.options.persons != "off")
        return step

    def _record(self, batch: FaceBatch) -> None:
        latency = float(batch.latency_ms[0])
        self.stats.processed += 1
        self.stats.faces += len(batch)
        self.latencies.append(latency)
        self.max_latency = max(self.max_latency, latency)

    def _finish(self) -> None:
        stats, reader = self.stats, self.reader
        stats.received, stats.dropped, stats.reconnects = reader.received, reader.dropped, reader.reconnects
        stats.error = str(reader.error) if reader.error else None
        if self.latencies:
            values = np.fromiter(self.latencies, float)
            stats.latency_ms = {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)),
                                "max": self.max_latency}
        stats.parts = [path for sink in self.sinks if isinstance(sink, RollingPartsWriter) for path in sink.paths]


def load_models(options: ModelOptions, *, use_ray: bool = False) -> Models:
    """The models of a live session: in this process, or one model actor on the cluster
    ``jobs.cluster.connect`` joined."""
    if not use_ray:
        return LocalModels(options)
    import ray

    plan = ClusterPlan.for_cluster(ray.cluster_resources())
    return ActorModels.start(options, plan)


def open_session(source: str, out: Path | None, options: ModelOptions, *,
                 reader_options: LiveSourceOptions = LiveSourceOptions(), jsonl: bool = False,
                 serve: tuple[str, int] | None = None, roll_seconds: float = 10.0, use_ray: bool = False,
                 jsonl_stream: TextIO = sys.stdout) -> tuple[LiveSession, PreviewServer | None]:
    """Everything ``emoray live`` needs, wired: reader, models, sinks. The reader is not started yet."""
    reader = LiveReader(source, reader_options)
    models = load_models(options, use_ray=use_ray)
    sinks: list[LiveSink] = []
    if out is not None:
        metadata = {"models": models.model_ids(), "options": options.to_dict(), "source": reader.name}
        sinks.append(RollingPartsWriter(out, reader.name, models.labels, metadata, roll_seconds,
                                        min_episode_seconds=options.min_episode_seconds))
    if jsonl:
        sinks.append(JsonLinesSink(models.labels, reader.name, jsonl_stream))
    server = None
    if serve is not None:
        server = PreviewServer(serve[0], serve[1], models.labels, reader.name).start()
        sinks.append(PreviewSink(server, models.labels))
    session = LiveSession(reader, models, sinks, options, keep_frames=server is not None)
    session.warm_up()
    return session, server
