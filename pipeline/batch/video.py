"""One video where it runs: its face batches, in frame order, through the path after the face step into its
tables; then its annotated video, its rows published and its manifest written last.

The scheduler (``pipeline.batch.scheduler``) hands a ``VideoUnit`` each segment's results as the segment
tasks finish (Ray passes them from the task's node to the unit's; the scheduler holds references, never the
rows), so nothing the scheduler does grows with the frames or faces of a video. A unit holds what is in
flight and the smoother's window, never a whole video. Units live in ``UnitHost`` actors: a small pool of
processes, each hosting the units of several videos (an actor's process costs ~1 s and ~150 MB to start).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import ray

from jobs import storage
from jobs.manifest import COMPLETE, file_records
from jobs.spec import RunOptions
from models.errors import EmorayError
from pipeline.batch.output import JobOutput
from pipeline.cluster_models import ActorModels
from pipeline.path import FacePath
from pipeline.persons.across import embeddings_path, embeddings_record
from pipeline.persons.follow import VideoPersons
from pipeline.persons.table import person_embeddings
from pipeline.shots import ShotCutter, shot_ids
from pipeline.sinks.parquet import FACES, VideoParquetSink
from pipeline.sources.file import DEFAULT_FRAME_RATE, VideoInfo
from pipeline.stages import SegmentResult
from pipeline.track import LOST_SECONDS



class UnitLostError(EmorayError, RuntimeError):
    """A video's unit is gone: its host was restarted (its node was lost); the video starts again."""


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


@dataclass(frozen=True)
class JobContext:
    """What every unit of a job shares: the models (their labels and ids; the embedder persons need), the
    results' fingerprint, the options."""

    labels: tuple[str, ...]
    model_ids: dict
    fingerprint: str
    options: RunOptions
    models: ActorModels


@dataclass(frozen=True)
class VideoTask:
    """A video to process: where it is, its id, its annotated video's name under OUT/annotated/, its probe,
    and why an earlier run's results of it are not kept (None: no earlier run finished it)."""

    path: str
    relative: str
    video_id: str
    annotated: str
    info: VideoInfo
    redone_because: str | None = None


def processed_fps(info: VideoInfo, sample_fps: float | None) -> float:
    """Frames per second the tracker sees: the video's rate, or the sampling rate when lower."""
    rate = info.fps or DEFAULT_FRAME_RATE
    return min(rate, sample_fps) if sample_fps else rate


class VideoUnit:
    """One video's results, from its first face batch to its manifest.

    ``take`` each segment's results in order, then ``finish`` (the tables complete, still staged),
    then ``publish`` (rows moved into place, manifest written: the video is complete), or ``abort``.
    """

    def __init__(self, task: VideoTask, context: JobContext, output: JobOutput) -> None:
        self.task, self.context, self.output = task, context, output
        self.started = time.monotonic()
        options = context.options
        metadata = {"video_path": task.path, "fingerprint": context.fingerprint, "labels": list(context.labels),
                    "options": options.to_dict(), **context.model_ids}
        persons = options.persons != "off"
        self.sink = VideoParquetSink(output.root, task.video_id, task.path, list(context.labels), metadata,
                                     min_episode_seconds=options.min_episode_seconds, persons=persons,
                                     keep_embeddings=options.keep_embeddings)
        self.path = FacePath([self.sink], num_labels=len(context.labels),
                             frame_rate=processed_fps(task.info, options.fps),
                             smoothing_seconds=options.smoothing_seconds, causal=False,
                             persons=VideoPersons(context.models.embed, LOST_SECONDS) if persons else None)
        self.shots = ShotCutter()
        self.last_pts = -1.0

    def take(self, segment: SegmentResult) -> dict:
        """The next segment's results (segments in order); returns how many frames, faces and bytes it held."""
        faces = segment.faces
        cuts = self.shots.update(segment.shots)
        self.path.write(replace(faces, shot=shot_ids(faces.frame_index, self.shots.cut_frames)), cuts=set(cuts.tolist()))
        if faces.num_frames:
            self.last_pts = float(faces.pts_time[-1])
        return {"frames": faces.num_frames, "faces": len(faces), "bytes": faces.nbytes}

    def finish(self) -> dict | None:
        """Complete the tables (staged). Returns what the annotate task needs (the faces file to draw from, on
        this node, and the MP4 to write), or None without annotation.

        Raises:
            EmorayError: no frame was decoded, or decoding ended well before the announced duration.
        """
        self.path.close()
        error = self._truncation() if self.sink.frames_written else f"{self.task.path}: no frame could be decoded"
        if error:
            raise EmorayError(error)
        if not self.context.options.annotate:
            return None
        return {"faces": str(self.sink.staged[FACES]), "destination": self.output.final(self._annotated_path())}

    def publish(self, error: str | None = None) -> VideoOutcome:
        """Move the parts into place, then write the manifest: the video is complete (``error``: its
        annotated video could not be made; its rows are kept, and a rerun makes it again)."""
        task, sink = self.task, self.sink
        labels = self.path.person_labels
        if self.context.options.persons == "across" and labels is not None:  # for linking the job's videos
            embeddings = person_embeddings(labels.appearances, labels.person_of_track)
            self.output.write_json(embeddings_path(self.output.root, task.video_id), embeddings_record(embeddings))
        outputs = self.output.publish(sink.publish())
        annotated = self.output.final(self._annotated_path())
        if self.context.options.annotate and error is None and self.output.exists(annotated):
            outputs["annotated"] = annotated
        seconds = time.monotonic() - self.started
        outcome = VideoOutcome(task.path, task.video_id, COMPLETE, sink.frames_written, sink.faces_written,
                               sink.dominant_emotion, error, seconds)
        self.output.write_manifest(task.video_id, {
            "video_id": task.video_id, "path": task.path, "relative_path": task.relative,
            "status": COMPLETE, "error": error, "fingerprint": self.context.fingerprint,
            "models": self.context.model_ids, "labels": list(self.context.labels),
            "options": self.context.options.to_dict(), "probe": asdict(task.info),
            "counts": {"frames": sink.frames_written, "faces": sink.faces_written, "shots": len(self.shots.cut_frames) + 1},
            "shot_cuts": [round(time, 6) for time in self.shots.cut_times],  # when each new shot starts, seconds
            "dominant_emotion": sink.dominant_emotion, "outputs": outputs, "files": file_records(outputs),
            "redone_because": task.redone_because,
            "timings": {"seconds": round(seconds, 3),
                        "fps": round(sink.frames_written / seconds, 2) if seconds else None},
            "unit_node": ray.get_runtime_context().get_node_id(),  # the Ray node that finished the video
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
        return outcome

    def abort(self) -> None:
        """Drop everything staged (a failed or interrupted video publishes nothing)."""
        self.path.abort()

    def _annotated_path(self) -> Path:
        return self.output.root / "annotated" / self.task.annotated

    def _truncation(self) -> str | None:
        """An error when decoding ended well before the duration the container announces."""
        info, fps = self.task.info, self.context.options.fps
        if info.is_image or not info.duration:
            return None
        slack = max(1.0, 5 / info.fps if info.fps else 0, 2 / fps if fps else 0)
        if self.last_pts + slack < info.duration:
            return (f"{self.task.path}: truncated: frames end at {max(self.last_pts, 0):.2f} s of the "
                    f"{info.duration:.2f} s the container announces")
        return None


class UnitHost:
    """A Ray actor hosting the ``VideoUnit`` of each video given to it; calls name the video by its id."""

    def __init__(self, output: str) -> None:
        self.output = JobOutput(output)
        self.units: dict[str, VideoUnit] = {}
        _convert_once()


    def start(self, task: VideoTask, context: JobContext) -> None:
        self.abort(task.video_id)  # a redo starts afresh
        self.units[task.video_id] = VideoUnit(task, context, self.output)

    def take(self, video_id: str, segment: SegmentResult) -> dict:
        return self._unit(video_id).take(segment)

    def finish(self, video_id: str) -> dict | None:
        """The unit's ``finish``, with this node's id: the annotate task runs here, where the faces file is."""
        annotation = self._unit(video_id).finish()
        return None if annotation is None else annotation | {"node_id": ray.get_runtime_context().get_node_id()}

    def publish(self, video_id: str, error: str | None = None) -> VideoOutcome:
        return self.units.pop(video_id).publish(error)

    @ray.method(concurrency_group="health")
    def ping(self) -> bool:
        """Answers at once, on its own thread, however many calls queue for the units: the scheduler asks
        whether this host lives without waiting behind them."""
        return True

    def abort(self, video_id: str) -> None:
        unit = self.units.pop(video_id, None)
        if unit is not None:
            unit.abort()

    def _unit(self, video_id: str) -> VideoUnit:
        unit = self.units.get(video_id)
        if unit is None:
            raise UnitLostError(f"video {video_id} is not on this unit host (restarted after its node was lost)")
        return unit

    def close(self) -> None:
        """Drop the units still here (their videos did not finish) and this host's staging folder."""
        for video_id in list(self.units):
            self.abort(video_id)
        self.output.close()


def _convert_once() -> None:
    """pyarrow imports pandas at its first conversion of a numpy array (~0.3 s here): a host pays it as it
    starts, while the first segment decodes, rather than on its first video's last step."""
    import numpy as np
    import pyarrow as pa

    pa.array(np.zeros(0, np.float32))


def start_unit_hosts(output: str, node_ids: list[str], *, pinned: bool) -> list[ray.actor.ActorHandle]:
    """A unit host on each of ``node_ids`` (repeat an id for several): ``pinned`` there (a local OUT is that
    node's disk), else placed there while it lives and restarted anywhere once its node is lost.

    They ask for no CPU (tracking and writing cost ~0.2 ms a frame: they must not hold a core decoding
    could use). One lost with its node restarts empty; the scheduler starts its videos again.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor = ray.remote(concurrency_groups={"health": 1})(UnitHost)
    return [actor.options(num_cpus=0, max_restarts=-1, max_task_retries=0,
                          scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=not pinned)).remote(output)
            for node_id in node_ids]


@ray.remote(max_retries=3)
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
