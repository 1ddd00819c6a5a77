"""Live mode: the newest frame of each camera through the face step and the path after it that batch mode uses.

One frame per source at a time, for latency rather than throughput: each source's reader hands over its
newest frame (a file without ``--realtime``: every frame, in order); the newest frames of all sources go
through the face step together (one detector batch, one classifier batch); then each source's own path
tracks, smooths causally, matches persons, and its sinks get the result with its capture time and
capture-to-result latency. The models run in this process by default, or as Ray actors (the very classes
batch mode uses) when a cluster address is given.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator, TextIO

import numpy as np

from jobs.spec import ROLL_SECONDS, LiveSourceOptions, ModelOptions
from models.embedding import CHIP_SIZE
from pipeline.faces import FaceStep, find_faces
from pipeline.path import FacePath
from pipeline.persons.follow import LivePersons
from pipeline.inference import LocalModels, Models
from pipeline.preview import PreviewServer
from pipeline.results import FaceBatch
from pipeline.sinks.live import JsonLinesSink, LiveSink, PreviewSink
from pipeline.shots import ShotCutter, frame_signature
from pipeline.sinks.live_parquet import RollingPartsWriter, new_session_id
from pipeline.sources.file import DEFAULT_FRAME_RATE
from pipeline.sources.live import LiveFrame, LiveReader, LiveSourceError, live_info
from pipeline.stopping import StopRequest
from pipeline.track import LOST_SECONDS

log = logging.getLogger(__name__)

LATENCY_WINDOW = 100_000  # latency percentiles are over at most this many recent frames
# What the tracker assumes of a camera (its lost-track buffer is in frames). Deliberately not the files'
# DEFAULT_FRAME_RATE: that is a fallback for an odd file, this is every stream's rate, which is never known up front.
CAMERA_FRAME_RATE = 25.0


@dataclass
class LiveStats:
    """What a live session did with one source; printed at the end and returned by ``LiveSession.run``."""

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


def _frame_rate(reader: LiveReader) -> float:
    """The tracker's frame rate: a file's own (or, as in batch mode, ``DEFAULT_FRAME_RATE``), a camera's assumed."""
    return reader.fps or (CAMERA_FRAME_RATE if reader.stream else DEFAULT_FRAME_RATE)


class LiveSource:
    """One source of a live session: its reader, and its own path after the face step (tracker, smoother,
    persons, sinks), shot cuts, counts and latencies.

    Args:
        reader: the source's reader (not started yet); the source owns it from now on and closes it.
        sinks: where its results go (its Parquet parts, JSON lines, its place on the preview page); owned
            and closed by the source as well, so a source that ends has its outputs written at once.
        models: the session's models (only their labels and ``embed`` are used here).
        name: what the source is called in results and outputs (default: its redacted URL).
    """

    def __init__(self, reader: LiveReader, sinks: list[LiveSink], models: Models, options: ModelOptions, *,
                 name: str | None = None, keep_frames: bool = False) -> None:
        self.reader, self.sinks, self.models, self.options = reader, sinks, models, options
        self.name, self.keep_frames = name or reader.name, keep_frames
        persons = LivePersons(models.embed, LOST_SECONDS) if options.persons != "off" else None
        # a file's own frame rate, as batch mode; causal smoothing: each frame's rows are final at once
        self.path = FacePath(sinks, num_labels=len(models.labels), frame_rate=_frame_rate(reader),
                             smoothing_seconds=options.smoothing_seconds, causal=True, persons=persons)
        self.shots = ShotCutter()
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.max_latency = 0.0
        self.stats = LiveStats(self.name)
        self.closed = False
        self._step: FaceStep | None = None
        self._started = time.monotonic()

    def face_step(self, frame: LiveFrame) -> FaceStep:
        """The face step for this source's frames (made again if the picture's size changes)."""
        info, step = live_info(frame, self.reader), self._step
        if step is None or (step.info.width, step.info.height, step.info.rotation) != (info.width, info.height, info.rotation):
            step = self._step = FaceStep(self.models, info, det_size=self.options.det_size,
                                         min_face=self.options.min_face, keep_frames=self.keep_frames,
                                         chips=self.options.persons != "off")
        return step

    def after_faces(self, frame: LiveFrame, faces: FaceBatch) -> FaceBatch:
        """One frame's faces through this source's path: tracked and smoothed over their tracks so far, with
        its capture time, latency (capture to classified faces) and shot; its sinks have it on return."""
        decoded = frame.decoded
        cut = self.shots.update_frame(decoded.index, decoded.pts_time, frame_signature(decoded))
        faces = replace(faces, capture_time=np.array([frame.capture_time], np.float64),
                        latency_ms=np.array([(time.time() - frame.capture_time) * 1000.0], np.float32),
                        shot=np.array([len(self.shots.cut_frames)], np.int64))
        # a file's clock is its timestamps (a replay smooths as the recording ran); a camera's is when frames arrive
        clock = frame.capture_time if self.reader.stream else decoded.pts_time
        batch = self.path.write(faces, cuts={decoded.index} if cut else set(), clock=np.array([clock], np.float64))
        latency = float(batch.latency_ms[0])
        self.stats.processed += 1
        self.stats.faces += len(batch)
        self.latencies.append(latency)
        self.max_latency = max(self.max_latency, latency)
        return batch

    def close(self, error: str | None = None) -> None:
        """Stop reading, write what is buffered and complete the counts (once); ``error``: why it stopped early."""
        if self.closed:
            return
        self.closed = True
        self.reader.close()
        try:
            self.path.close()
        except Exception as failure:  # noqa: BLE001  (e.g. a closed pipe: the other sinks still closed)
            log.warning("%s: closing its outputs: %s", self.name, failure)
        stats, reader = self.stats, self.reader
        stats.seconds = time.monotonic() - self._started
        stats.received, stats.dropped, stats.reconnects = reader.received, reader.dropped, reader.reconnects
        stats.error = error or (str(reader.error) if reader.error else None)
        if self.latencies:
            values = np.fromiter(self.latencies, float)
            stats.latency_ms = {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)),
                                "max": self.max_latency}
        stats.parts = [path for sink in self.sinks if isinstance(sink, RollingPartsWriter) for path in sink.paths]


class LiveSession:
    """Follows one or many sources with one set of models: the newest frame of every source that has one goes
    through one face step (one detector call per input size, one classifier call), then through that
    source's own path. Each round takes at most one frame of each source, so a fast camera never starves a
    slow one; a source that fails or ends is closed alone and the others go on.

    ``results()`` yields (source, its tracked frame) as they come; ``run()`` just feeds the sinks.
    """

    def __init__(self, sources: list[LiveSource], models: Models, options: ModelOptions) -> None:
        self.sources, self.models, self.options = sources, models, options
        self.ready = threading.Event()  # set by every reader when it has a frame or ends
        for source in sources:
            source.reader.ready = self.ready
        self._closed = False

    def start(self) -> None:
        for source in self.sources:
            source.reader.start()

    def warm_up(self, size_wh: tuple[int, int] = (640, 360)) -> None:
        """Run the models once on a blank frame, so the first real frame does not pay for lazy set-up."""
        self.models.detect(np.zeros((1, size_wh[1], size_wh[0], 3), np.uint8)).result()
        spec = self.models.crop_spec
        self.models.classify(np.zeros((1, spec.input_size, spec.input_size) + ((3,) if spec.channels == 3 else ()), np.uint8))
        if self.options.persons != "off":
            self.models.embed(np.zeros((1, CHIP_SIZE, CHIP_SIZE, 3), np.uint8))

    def results(self, stop: StopRequest | threading.Event | None = None,
                duration: float | None = None) -> Iterator[tuple[LiveSource, FaceBatch]]:
        """Each processed frame of every source, until stopped, ``duration``, or every source has ended."""
        stop = stop or threading.Event()
        started = time.monotonic()
        while not stop.is_set():
            remaining = None if duration is None else duration - (time.monotonic() - started)
            if remaining is not None and remaining <= 0:
                break
            self.ready.clear()  # before looking: a frame that comes meanwhile sets it again
            frames = [(source, frame) for source in self.sources if not source.closed
                      and (frame := source.reader.take(timeout=0)) is not None]
            for source in [s for s in self.sources if not s.closed and s.reader.ended]:
                if not any(taken is source for taken, _ in frames):
                    source.close()  # ended, its last frame taken: its outputs are written now
            if not frames:
                if all(source.closed for source in self.sources):
                    break
                self.ready.wait(min(0.5, remaining) if remaining is not None else 0.5)
                continue
            yield from self._process(frames)

    def run(self, stop: StopRequest | threading.Event | None = None, duration: float | None = None) -> list[LiveStats]:
        """Process until stopped (every result goes to its source's sinks); then flush them all."""
        try:
            for _ in self.results(stop, duration):
                pass
        finally:
            self.close()
        return [source.stats for source in self.sources]

    def close(self) -> None:
        """Close every source (its reader and sinks), once."""
        if self._closed:
            return
        self._closed = True
        for source in self.sources:
            source.close()

    def _process(self, frames: list[tuple[LiveSource, LiveFrame]]) -> Iterator[tuple[LiveSource, FaceBatch]]:
        """The faces of one frame of each source, found together; a source whose frame cannot be processed
        (its step raised) is closed with the reason, the others go on."""
        try:
            found = find_faces([(source.face_step(frame), [frame.decoded]) for source, frame in frames])
        except Exception:  # noqa: BLE001  (one source's odd frame must not stop the others: find which)
            found = []
            for source, frame in frames:
                try:
                    found += find_faces([(source.face_step(frame), [frame.decoded])])
                except Exception as error:  # noqa: BLE001
                    log.warning("%s: %s", source.name, error)
                    source.close(error=f"{source.name}: {error}")
                    found.append(None)
        for (source, frame), faces in zip(frames, found):
            if faces is not None and not source.closed:
                yield source, source.after_faces(frame, faces)


def load_models(options: ModelOptions, *, use_ray: bool = False) -> Models:
    """The models of a live session: in this process, or one model actor on the cluster
    ``jobs.cluster.connect`` joined."""
    if not use_ray:
        return LocalModels(options)
    import ray

    from pipeline.cluster_models import ActorModels, ClusterPlan  # Ray only when a cluster runs the models

    plan = ClusterPlan.for_cluster(ray.cluster_resources())
    return ActorModels.start(options, plan)


def open_session(sources: list[tuple[str, str | None]], out: Path | None, options: ModelOptions, *,
                 reader_options: LiveSourceOptions = LiveSourceOptions(), jsonl: bool = False,
                 serve: tuple[str, int] | None = None, roll_seconds: float = ROLL_SECONDS, use_ray: bool = False,
                 jsonl_stream: TextIO = sys.stdout) -> tuple[LiveSession, PreviewServer | None]:
    """Everything ``emoray live`` needs, wired: a reader and sinks per (URL or path, name or None) source, one
    set of models. The readers are not started yet (``LiveSession.start``)."""
    readers = [(LiveReader(url, reader_options), name) for url, name in sources]
    names = [name or reader.name for reader, name in readers]
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise LiveSourceError(f"two sources are both called {twice!r}: give each a name of its own")
    with contextlib.ExitStack() as made:  # what is made here is closed here if the session cannot start
        models = load_models(options, use_ray=use_ray)
        made.callback(models.close)
        server = PreviewServer(serve[0], serve[1], models.labels, names).start() if serve is not None else None
        if server is not None:
            made.callback(server.close)
        session_id = new_session_id()
        live_sources = []
        for slot, ((reader, _), name) in enumerate(zip(readers, names)):
            sinks: list[LiveSink] = []
            if out is not None:
                metadata = {"models": models.model_ids(), "options": options.to_dict(), "source": name}
                sinks.append(RollingPartsWriter(out, reader.name, models.labels, metadata, roll_seconds,
                                                min_episode_seconds=options.min_episode_seconds, name=name,
                                                session_id=session_id))
            if jsonl:
                sinks.append(JsonLinesSink(models.labels, name, jsonl_stream))
            if server is not None:
                sinks.append(PreviewSink(server, models.labels, slot=slot))
            live_sources.append(LiveSource(reader, sinks, models, options, name=name, keep_frames=server is not None))
        session = LiveSession(live_sources, models, options)
        session.warm_up()
        made.pop_all()  # the caller closes the session, its models and the server from now on
    return session, server


def read_sources(path: Path) -> list[tuple[str, str | None]]:
    """The (URL or path, name or None) of each source listed in a ``--sources`` file: one a line, the name
    after the URL, blank lines and ``#`` comments skipped.

    Raises:
        LiveSourceError: a line holds more than a source and a name, or two sources share a name.
    """
    sources = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) > 2:
            raise LiveSourceError(f"{path}:{number}: expected 'URL [NAME]', but got {line.strip()!r}")
        sources.append((fields[0], fields[1] if len(fields) == 2 else None))
    names = [name for _, name in sources if name]
    if len(set(names)) != len(names):
        raise LiveSourceError(f"{path}: two sources have the same name")
    return sources


def session_summary(stats: list[LiveStats]) -> dict:
    """The ``--json`` summary: each source's counts and latency (``sources``), and their totals; with one
    source, its own figures at the top level too."""
    totals = {key: sum(getattr(source, key) for source in stats) for key in ("received", "processed", "dropped",
                                                                              "reconnects", "faces")}
    errors = [source.error for source in stats if source.error]
    summary = {"sources": [source.to_dict() for source in stats], **totals, "error": errors[0] if errors else None,
               "seconds": max((source.seconds for source in stats), default=0.0)}
    return stats[0].to_dict() | summary if len(stats) == 1 else summary
