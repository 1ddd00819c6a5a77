"""Batch mode: a directory of recordings in, per-frame Parquet, annotated videos and manifests out.

The driver discovers inputs, skips those already complete, and streams every video through Ray:
``inspect_video`` (probe + plan) -> ``process_segment`` tasks (decode, the face step) -> here, in
order, the tracker stage and Parquet writing (staged) -> ``annotate`` task -> the video's parts moved into
place -> manifest, written last. A failing video is recorded with its error, publishes no rows and
never stops the others. A ``StopRequest`` (SIGINT, SIGTERM) ends the job at the next safe point:
finished videos stay, unfinished ones leave nothing visible.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import os
import shutil
import tempfile
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import ray

from jobs import storage
from jobs.discover import MEDIA_EXTENSIONS, discover, video_id
from jobs.lock import output_lock
from jobs.manifest import COMPLETE, FAILED, is_complete, manifest_path, read_manifest, write_json_atomic
from jobs.cluster import connect
from jobs.spec import JobSpec, RunOptions
from models.errors import EmorayError
from pipeline.errors import InputError, OutputError
from pipeline.inference import ActorModels, ClusterPlan, object_store_bytes, start_actors
from pipeline.results import FaceBatch
from pipeline.sinks.parquet import FACES, PART_NAME, STAGING, TABLES, VideoResultsWriter, partition_dir, remove_published
from pipeline.sources.file import VideoInfo
from pipeline.stages import inspect_video, process_segment
from pipeline.stopping import StopRequest

if TYPE_CHECKING:
    from pipeline.track import FaceTracker

SKIPPED, INTERRUPTED = "skipped", "interrupted"


@dataclass
class VideoOutcome:
    """One row of the job summary."""

    path: str
    video_id: str | None
    status: str
    frames: int = 0
    faces: int = 0
    dominant_emotion: str | None = None
    error: str | None = None
    seconds: float = 0.0


@dataclass
class _Video:
    """A video in flight through the driver."""

    path: Path
    relative: Path
    video_id: str
    annotated: Path | None = None  # under OUT/annotated/, unique in the job
    started: float = field(default_factory=time.monotonic)
    info: VideoInfo | None = None
    segments: deque = field(default_factory=deque)  # not yet submitted
    submitted: deque = field(default_factory=deque)  # (segment, ref) in order
    writer: VideoResultsWriter | None = None
    tracker: "FaceTracker | None" = None  # once the frame rate is known
    last_pts: float = -1.0
    annotate_ref: ray.ObjectRef | None = None
    shared_faces: str | None = None  # the staged faces file uploaded for the annotate task (output in a store)
    outputs: dict = field(default_factory=dict)


class _Interrupted(Exception):
    """The job's ``StopRequest`` was set before the models were ready."""


def connect_for(options: RunOptions, address: str | None, *, dashboard: bool = False) -> None:
    """Join ``address`` or start the embedded Ray, with an object store sized to the job. Meanwhile the
    tracker's libraries (supervision, scipy: ~0.7 s) are imported in a thread, on the core Ray's starting
    services leave idle, instead of after the first segment."""
    threading.Thread(target=importlib.import_module, args=("pipeline.track",), daemon=True).start()
    connect(address, dashboard=dashboard, object_store_bytes=object_store_bytes(options, os.cpu_count() or 1))


def check_output_writable(out: str | Path) -> None:
    """Fail before any work when OUT (a folder, or an object-store URI) cannot be created or written."""
    if storage.is_uri(out):
        try:
            return storage.check_writable(str(out))
        except storage.StorageError as error:
            raise OutputError(str(error)) from error
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as error:
        raise OutputError(f"{out}: output directory is not writable ({error.strerror or error})") from error


def _annotated_path(out: Path, video: "_Video") -> Path:
    return out / "annotated" / video.annotated


def _name_annotated_videos(videos: list["_Video"]) -> None:
    """Each video's annotated name (under OUT/annotated/): its relative path as .mp4, with the content id
    added where two inputs of the job would share one (a.mov and a.mp4, or cam.mp4 from two folders)."""
    names = [video.relative.with_suffix(".mp4") for video in videos]
    taken = Counter(names)
    for video, name in zip(videos, names):
        video.annotated = name if taken[name] == 1 else name.with_name(f"{name.stem}.{video.video_id[:8]}.mp4")


@ray.remote(max_retries=3, scheduling_strategy="SPREAD")
@storage.with_local_input
def annotate(source: str, destination: str, faces_file: str, sample_fps: float | None, labels: list[str]) -> int:
    """Draw the results onto the processed frames and encode the annotated MP4 (input audio kept).

    ``destination`` and ``faces_file`` may be object-store URIs (an output folder in a store).
    """
    import pyarrow.parquet as pq

    from pipeline.sinks.video import write_annotated_video

    with storage.open_any(faces_file) as faces, storage.local_output(destination) as local_destination:
        batches = pq.ParquetFile(faces).iter_batches(batch_size=4096)
        return write_annotated_video(Path(source), local_destination, batches, sample_fps=sample_fps, labels=labels)


class BatchJob:
    """Runs one ``JobSpec`` on the Ray cluster ``ray.init`` connected to."""

    def __init__(self, spec: JobSpec, *, on_progress: Callable[[dict], None] | None = None,
                 stop: StopRequest | None = None) -> None:
        self.spec, self.options = spec, spec.options
        self.stop = stop or StopRequest()
        # an output URI: files are written in a local staging folder, then uploaded video by video
        self.store = storage.OutputStore(spec.output) if storage.is_uri(spec.output) else None
        self.out = self.store.staging if self.store else Path(spec.output)
        self.on_progress = on_progress or (lambda state: None)
        self.outcomes: list[VideoOutcome] = []
        self.frames_done = 0

    def run(self) -> list[VideoOutcome]:
        """Process the job; holds the output folder's lock (one writer per folder) while it runs.

        Raises:
            OutputError, OutputLockedError, InputError: before any work, with the reason.
        """
        check_output_writable(self.spec.output)
        try:
            with output_lock(self.spec.output):
                return self._run()
        finally:
            if self.store:
                self.store.close()

    def _run(self) -> list[VideoOutcome]:
        started = time.monotonic()
        shutil.rmtree(self.out / STAGING, ignore_errors=True)  # parts of videos a killed run left unfinished
        found = discover(list(self.spec.inputs), glob=self.spec.glob, output=self.spec.output)
        self.outcomes = [VideoOutcome(str(p), None, FAILED, error=reason) for p, reason in found.refused]
        self.outcomes += [VideoOutcome(str(p), None, SKIPPED, error=reason) for p, reason in found.skipped]
        self.outcomes += [VideoOutcome(str(folder), None, SKIPPED, error=f"{folder}: an emoray output folder, not searched")
                          for folder in found.output_folders]
        if not found.inputs and not found.refused:
            raise InputError(_no_inputs_message(self.spec))
        self.model_ids, self.fingerprint = {}, None
        self.plan = plan = ClusterPlan.for_cluster(
            ray.cluster_resources(), [n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]])
        actors = start_actors(self.options, plan)
        try:  # the actors hold their CPUs or GPU until killed, whatever happens here
            candidates = self._candidates(found.inputs)
            # probe the first videos while the models load (a short job waits less for its first worker)
            early = {self._inspect(video): video for video in candidates[:plan.max_segments_in_flight + 1]}
            models = ActorModels(actors[0], self._get(actors[0].info.remote()))
            self.labels = models.labels
            self.model_ids = models.model_ids()
            self.fingerprint = self.options.fingerprint(self.model_ids)
            todo = self._not_complete(candidates)
            self.total = len(todo) + len(self.outcomes)
            pending = {id(video) for video in todo}
            for ref in [ref for ref, video in early.items() if id(video) not in pending]:  # complete already
                del early[ref]
                ray.cancel(ref)
            self._loop(todo, plan, [models.on(actor) for actor in actors], early)
        except _Interrupted:
            pass
        finally:
            for actor in actors:
                ray.kill(actor)
        with contextlib.suppress(OSError):
            (self.out / STAGING).rmdir()  # empty unless a video failed to clean up
        self._write_job_json(time.monotonic() - started)
        return self.outcomes

    def _get(self, ref: ray.ObjectRef):
        """``ray.get`` that gives way to the stop request."""
        while not ray.wait([ref], timeout=0.25)[0]:
            if self.stop.is_set():
                raise _Interrupted
        return ray.get(ref)

    def _candidates(self, inputs: list[tuple[Path, Path]]) -> list["_Video"]:
        """The inputs that can be read, each content once, with the names of their annotated videos."""
        seen, candidates = {}, []
        for path, relative in inputs:
            try:
                identity = video_id(path)
            except OSError as error:
                self.outcomes.append(VideoOutcome(str(path), None, FAILED, error=f"{path}: cannot read ({error.strerror or error})"))
                continue
            if identity in seen:
                self.outcomes.append(VideoOutcome(str(path), identity, SKIPPED, error=f"same content as {seen[identity]}"))
                continue
            seen[identity] = path
            candidates.append(_Video(path, Path(relative), identity))
        _name_annotated_videos(candidates)
        return candidates

    def _not_complete(self, candidates: list["_Video"]) -> deque:
        """Videos to process: not already complete with these models and options (unless --force)."""
        todo = deque()
        for video in candidates:
            path, identity = video.path, video.video_id
            manifest = self._read_manifest(identity)
            if not self.spec.force and is_complete(manifest, self.fingerprint, annotate=self.options.annotate,
                                                   exists=self._exists):
                counts = manifest.get("counts", {})
                self.outcomes.append(VideoOutcome(str(path), identity, SKIPPED, counts.get("frames", 0),
                                                  counts.get("faces", 0), manifest.get("dominant_emotion"),
                                                  error="already complete"))
                continue
            todo.append(video)
        return todo

    def _inspect(self, video: "_Video") -> ray.ObjectRef:
        return inspect_video.remote(str(video.path), self.options.segment_seconds)

    def _loop(self, todo: deque, plan: ClusterPlan, models: list[ActorModels],
              inspecting: dict[ray.ObjectRef, "_Video"]) -> None:
        """Stream the videos through the cluster: segments submitted oldest video first, results taken in order.

        ``inspecting``: the videos already being probed; the others of ``todo`` are probed now.
        """
        started = {id(video) for video in inspecting.values()}
        inspecting.update({self._inspect(video): video for video in todo if id(video) not in started})
        active: list[_Video] = []
        annotating: dict[ray.ObjectRef, _Video] = {}
        in_flight = 0
        round_robin = itertools.count()

        def submit() -> None:
            """Segments, oldest video first, up to the cluster's budget."""
            nonlocal in_flight
            for video in active:
                while video.segments and in_flight < plan.max_segments_in_flight:
                    segment = video.segments.popleft()
                    ref = process_segment.options(num_cpus=plan.segment_cpus).remote(
                        str(video.path), video.info, segment, self.options, models[next(round_robin) % len(models)])
                    video.submitted.append((segment, ref))
                    in_flight += 1

        while (inspecting or active or annotating) and not self.stop.is_set():
            submit()
            waiting = list(inspecting) + [v.submitted[0][1] for v in active if v.submitted] + list(annotating)
            ready, _ = ray.wait(waiting, num_returns=1, timeout=1.0)
            for ref in ready:
                if ref in inspecting:
                    video = inspecting.pop(ref)
                    if self._start(video, ref):
                        active.append(video)
                elif ref in annotating:
                    self._finish_annotation(annotating.pop(ref))
                else:
                    video = next(v for v in active if v.submitted and v.submitted[0][1] == ref)
                    in_flight -= 1
                    submit()  # the next segment decodes while this one is tracked and written
                    self._take_segment(video)
            for video in [v for v in active if v.writer is None or (not v.segments and not v.submitted)]:
                active.remove(video)
                in_flight -= self._cancel(video)
                if video.writer is not None:
                    ref = self._complete_results(video)
                    if ref is not None:
                        annotating[ref] = video
            self._progress(active)
        unfinished = [*inspecting.values(), *active, *annotating.values()]
        for video in unfinished:
            self._interrupt(video)
        for ref in [*inspecting, *annotating]:
            ray.cancel(ref, force=False)

    def _interrupt(self, video: _Video) -> None:
        """Drop a video the stop request left unfinished: nothing of it published, no manifest."""
        self._cancel(video)
        self._discard_staged(video)
        self.outcomes.append(VideoOutcome(str(video.path), video.video_id, INTERRUPTED,
                                          error=f"stopped by {self.stop.signal_name or 'request'} before it finished",
                                          seconds=time.monotonic() - video.started))

    def _start(self, video: _Video, ref: ray.ObjectRef) -> bool:
        try:
            info, segments = ray.get(ref)
        except (EmorayError, ray.exceptions.RayError) as error:  # RayError: also a node or worker lost past retries
            self._fail(video, error)
            return False
        video.info = replace(info, path=str(video.path))  # a URI's, not the node's copy
        video.segments = deque(segments)
        metadata = {"video_path": str(video.path), "fingerprint": self.fingerprint, "labels": self.labels,
                    "options": self.options.to_dict(), **self.model_ids}
        video.writer = VideoResultsWriter(self.out, video.video_id, str(video.path), self.labels, metadata,
                                          smoothing_seconds=self.options.smoothing_seconds,
                                          min_episode_seconds=self.options.min_episode_seconds)
        from pipeline.track import FaceTracker  # see connect_for

        video.tracker = FaceTracker(frame_rate=_processed_fps(info, self.options.fps))
        return True

    def _take_segment(self, video: _Video) -> None:
        segment, ref = video.submitted.popleft()
        try:
            result: FaceBatch = ray.get(ref)
        except (EmorayError, ray.exceptions.RayError) as error:
            self._fail(video, error)
            return
        try:
            video.writer.write(video.tracker.update_with_faces(result))
        except Exception as error:  # noqa: BLE001  (a full disk, a tracker fault: this video fails, not the job)
            self._fail(video, error)
            return
        if result.num_frames:
            video.last_pts = float(result.pts_time[-1])
        self.frames_done += result.num_frames

    def _cancel(self, video: _Video) -> int:
        """Drop the rest of a failed video; returns how many submitted segments were cancelled."""
        cancelled = len(video.submitted)
        for _, ref in video.submitted:
            ray.cancel(ref, force=False)
        video.submitted.clear()
        video.segments.clear()
        return cancelled

    def _truncation(self, video: _Video) -> str | None:
        """An error when decoding ended well before the duration the container announces."""
        info = video.info
        if info.is_image or not info.duration:
            return None
        slack = max(1.0, 5 / info.fps if info.fps else 0, 2 / self.options.fps if self.options.fps else 0)
        if video.last_pts + slack < info.duration:
            return (f"{video.path}: truncated: frames end at {max(video.last_pts, 0):.2f} s of the "
                    f"{info.duration:.2f} s the container announces")
        return None

    def _complete_results(self, video: _Video) -> ray.ObjectRef | None:
        if video.writer is None:
            return None
        error = self._truncation(video) if video.writer.frames_written else f"{video.path}: no frame could be decoded"
        if error:
            self._fail(video, EmorayError(error))
            return None
        try:
            staged_faces = video.writer.close()[FACES]
        except Exception as error:  # noqa: BLE001  (as in _take_segment: this video fails, not the job)
            self._fail(video, error)
            return None
        if not self.options.annotate:
            self._record(video)
            return None
        video.shared_faces = self.store.share(staged_faces) if self.store else str(staged_faces)
        destination = self._final(_annotated_path(self.out, video))
        video.annotate_ref = annotate.options(num_cpus=self.plan.segment_cpus).remote(
            str(video.path), destination, video.shared_faces, self.options.fps, self.labels)
        return video.annotate_ref

    def _finish_annotation(self, video: _Video) -> None:
        try:
            ray.get(video.annotate_ref)
        except (EmorayError, ray.exceptions.RayError) as error:
            self._fail(video, EmorayError(f"annotated video: {_message(error, video.path)}"))
            return
        self._record(video)

    def _record(self, video: _Video) -> None:
        """Publish a finished video's parts, then write its manifest: the video is complete."""
        writer = video.writer
        video.outputs = writer.publish()
        if self.store:
            video.outputs = {name: self.store.publish(path) for name, path in video.outputs.items()}
            if video.shared_faces:
                storage.delete(video.shared_faces)
        annotated = self._final(_annotated_path(self.out, video))
        if self.options.annotate and self._exists(annotated):
            video.outputs["annotated"] = annotated
        outcome = VideoOutcome(str(video.path), video.video_id, COMPLETE, writer.frames_written, writer.faces_written,
                               writer.dominant_emotion, None, time.monotonic() - video.started)
        self.outcomes.append(outcome)
        self._write_json(manifest_path(self.out, video.video_id), {
            "video_id": video.video_id, "path": str(video.path), "relative_path": str(video.relative),
            "status": COMPLETE, "error": None, "fingerprint": self.fingerprint, "models": self.model_ids,
            "labels": self.labels,
            "options": self.options.to_dict(), "probe": vars(video.info) if video.info else None,
            "counts": {"frames": writer.frames_written, "faces": writer.faces_written},
            "dominant_emotion": writer.dominant_emotion, "outputs": video.outputs,
            "timings": {"seconds": round(outcome.seconds, 3),
                        "fps": round(writer.frames_written / outcome.seconds, 2) if outcome.seconds else None},
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })

    def _fail(self, video: _Video, error: BaseException) -> None:
        """Record a failed video: its staged parts dropped, and rows an earlier run published removed."""
        message = _message(error, video.path)
        self._discard_staged(video)
        self._unpublish(video.video_id)
        self.outcomes.append(VideoOutcome(str(video.path), video.video_id, FAILED, error=message,
                                          seconds=time.monotonic() - video.started))
        self._write_json(manifest_path(self.out, video.video_id), {
            "video_id": video.video_id, "path": str(video.path), "status": FAILED, "error": message,
            "fingerprint": self.fingerprint, "models": self.model_ids, "outputs": {},
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
        video.writer = None

    def _discard_staged(self, video: _Video) -> None:
        if video.writer is not None:
            video.writer.abort()
        if self.store and video.shared_faces:
            storage.delete(video.shared_faces)

    def _progress(self, active: list[_Video]) -> None:
        self.on_progress({"done": len(self.outcomes), "total": self.total, "frames": self.frames_done,
                          "active": [str(v.relative) for v in active]})

    def _write_job_json(self, seconds: float) -> None:
        failed = [o for o in self.outcomes if o.status == FAILED]
        self._write_json(self.out / "job.json", {
            "spec": self.spec.to_dict(), "models": self.model_ids, "fingerprint": self.fingerprint,
            "summary": {"videos": len(self.outcomes), "failed": len(failed),
                        "interrupted": sum(o.status == INTERRUPTED for o in self.outcomes),
                        "stopped_by": self.stop.signal_name if self.stop.is_set() else None,
                        "frames": sum(o.frames for o in self.outcomes if o.status == COMPLETE),
                        "faces": sum(o.faces for o in self.outcomes if o.status == COMPLETE),
                        "seconds": round(seconds, 3)},
            "videos": [vars(o) for o in self.outcomes],
        })

    # OUT on a local disk, or in an object store (staged locally, then uploaded)

    def _final(self, path: Path) -> str:
        """Where a file of OUT ends up: the path itself, or its URI in the output store."""
        return self.store.uri_of(path) if self.store else str(path)

    def _exists(self, final: str) -> bool:
        return storage.exists(final) if self.store else os.path.exists(final)

    def _unpublish(self, video_id: str) -> None:
        if not self.store:
            return remove_published(self.out, video_id)
        for table in TABLES:
            storage.delete(self._final(partition_dir(self.out, table, video_id) / PART_NAME))

    def _read_manifest(self, video_id: str) -> dict | None:
        if self.store:
            return self.store.read_json(manifest_path(self.out, video_id))
        return read_manifest(self.out, video_id)

    def _write_json(self, path: Path, payload: dict) -> None:
        if self.store:
            self.store.write_json(path, payload)
        else:
            write_json_atomic(path, payload)


def _processed_fps(info: VideoInfo, sample_fps: float | None) -> float:
    """Frames per second the tracker sees: the video's rate, or the sampling rate when lower."""
    rate = info.fps or 30.0
    return min(rate, sample_fps) if sample_fps else rate


def _no_inputs_message(spec: JobSpec) -> str:
    where = ", ".join(spec.inputs)
    matching = f", matching --glob {spec.glob!r}" if spec.glob else ""
    return f"no inputs found under {where} (extensions {' '.join(sorted(MEDIA_EXTENSIONS))}{matching})"


def _message(error: BaseException, path: Path) -> str:
    """The user-facing reason, with Ray's wrapping removed and the file named."""
    cause = error.cause if isinstance(error, ray.exceptions.RayTaskError) and error.cause else error
    text = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
    return text if str(path) in text else f"{path}: {text}"
