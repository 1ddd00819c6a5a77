"""The scheduler's loop: every video through probe, segments, its unit, annotation and publishing.

Only references and small summaries pass through here: a segment's results go from its task to the video's
unit when the driver hands the unit the task's reference (in segment order, once the segment is decoded), so
the rows never enter this process. In flight at once: ``max_segments_in_flight`` segments, counted until their
unit has taken them, so neither decoding nor a unit's queue grows without bound. A unit lost with its node
makes its video start again on another (``MAX_ATTEMPTS``); any other error fails that video alone.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from jobs.files import fitting_name
from jobs.manifest import FAILED
from models.errors import EmorayError
from pipeline.batch.output import JobOutput
from pipeline.batch.video import JobContext, UnitLostError, VideoOutcome, VideoTask, annotate
from pipeline.cluster_models import ActorModels, ClusterPlan
from pipeline.stages import inspect_video, process_segment
from pipeline.stopping import StopRequest

SKIPPED, INTERRUPTED = "skipped", "interrupted"
MAX_ATTEMPTS = 3  # a video whose unit was lost (its node died) starts again this many times at most
HOST_RESTART_SECONDS = 60.0  # how long a lost unit host may take to answer again, restarted elsewhere
HOST_PING_SECONDS = 5.0  # one round of asking the unit hosts whether they live
# a unit's host died (with its node) or came back without it, or the annotate task bound to that node can
# no longer run there
LOST = (ray.exceptions.RayActorError, ray.exceptions.NodeDiedError, ray.exceptions.TaskUnschedulableError,
        UnitLostError)


@dataclass
class Video:
    """A video the driver schedules: what it is, and which of its steps are under way."""

    path: Path
    relative: Path
    video_id: str
    annotated: Path | None = None  # under OUT/annotated/, unique in the job
    started: float = field(default_factory=time.monotonic)
    task: VideoTask | None = None
    plan: list = field(default_factory=list)  # every segment, for a fresh start
    host: ray.actor.ActorHandle | None = None
    segments: deque = field(default_factory=deque)  # not yet submitted
    decoding: deque = field(default_factory=deque)  # segment task refs, in order
    taking: deque = field(default_factory=deque)  # the unit's start and take calls, in order
    step: ray.ObjectRef | None = None  # finish, annotate or publish under way
    step_name: str = ""
    attempts: int = 1
    redone_because: str | None = None  # why an earlier run's results are not kept (damaged, failed, ...)

    @property
    def segments_in_flight(self) -> int:
        return len(self.decoding) + sum(kind == "take" for kind, _ in self.taking)


def annotated_names(videos: list[Video], limit: int) -> list[Path]:
    """Each video's annotated name (under OUT/annotated/): its relative path as .mp4, with the content id
    added where two inputs of the job would share one (a.mov and a.mp4, or cam.mp4 from two folders),
    cut to fit ``limit`` bytes with its temporary name (``jobs.files.fitting_name``)."""
    names = [video.relative.with_suffix(".mp4") for video in videos]
    taken = Counter(names)
    names = [name if taken[name] == 1 else name.with_name(f"{name.stem}.{video.video_id[:8]}.mp4")
             for video, name in zip(videos, names)]
    return [name.with_name(fitting_name(name.name, video.video_id[:8], limit=limit)) for video, name in zip(videos, names)]


class VideoFlow:
    """Moves the videos of one job through the cluster; ``outcomes`` holds one row per video it ended."""

    def __init__(self, context: JobContext, output: JobOutput, plan: ClusterPlan, models: list[ActorModels],
                 hosts: list[ray.actor.ActorHandle], *, stop: StopRequest) -> None:
        self.context, self.output, self.plan, self.models, self.hosts = context, output, plan, models, hosts
        self.stop = stop
        self.outcomes: list[VideoOutcome] = []
        self.frames = 0
        self.bytes_to_units = 0  # the face batches handed from segment tasks to units
        self._model_turn = itertools.count()
        self._host_load: Counter = Counter()

    def run(self, todo: list[Video], inspecting: dict[ray.ObjectRef, Video], on_progress: Callable[[dict], None]) -> None:
        """Process ``todo``; ``inspecting``: those already being probed (the others are probed now)."""
        probing = {id(video) for video in inspecting.values()}
        inspecting = inspecting | {self._inspect(video): video for video in todo if id(video) not in probing}
        active: list[Video] = []
        while (inspecting or active) and not self.stop.is_set():
            self._submit_segments(active)
            waiting = self._waiting(inspecting, active)
            ready, _ = ray.wait(list(waiting), num_returns=1, timeout=1.0, fetch_local=False)
            if ready:  # everything else that is ready too: one pass handles them all
                ready, _ = ray.wait(list(waiting), num_returns=len(waiting), timeout=0, fetch_local=False)
            for ref in ready:
                kind, video = waiting[ref]
                if kind == "inspect":
                    del inspecting[ref]
                    if self._start(video, ref):
                        active.append(video)
                elif kind == "decoded":
                    video.taking.append(("take", video.host.take.remote(video.video_id, video.decoding.popleft())))
                elif kind == "taken":
                    self._taken(video)
                elif kind == "step":
                    self._step_done(video)
            for video in [v for v in active if self._ended(v)]:
                active.remove(video)
                self._host_load[video.host] -= 1
            on_progress({"done": len(self.outcomes), "frames": self.frames, "active": [str(v.relative) for v in active]})
        for video in [*inspecting.values(), *active]:
            self._interrupt(video)
        for ref in inspecting:
            ray.cancel(ref, force=False)

    def _waiting(self, inspecting: dict, active: list[Video]) -> dict[ray.ObjectRef, tuple[str, Video]]:
        """What the loop waits on: probes, and of each video its oldest decoding segment, its oldest unit
        call and its step under way (segments are taken in order, so only the oldest matters)."""
        waiting = {ref: ("inspect", video) for ref, video in inspecting.items()}
        for video in active:
            if video.decoding:
                waiting[video.decoding[0]] = ("decoded", video)
            if video.taking:
                waiting[video.taking[0][1]] = ("taken", video)
            if video.step is not None:
                waiting[video.step] = ("step", video)
        return waiting

    def _inspect(self, video: Video) -> ray.ObjectRef:
        return inspect_video.remote(str(video.path), self.context.options.segment_seconds)

    def _start(self, video: Video, ref: ray.ObjectRef) -> bool:
        """The probe is in: give the video to the least busy unit host and plan its segments."""
        try:
            info, segments = ray.get(ref)
        except (EmorayError, ray.exceptions.RayError) as error:  # RayError: also a node or worker lost past retries
            self._fail(video, error)
            return False
        video.task = VideoTask(str(video.path), str(video.relative), video.video_id, str(video.annotated),
                               replace(info, path=str(video.path)),  # a URI's, not the node's copy
                               video.redone_because)
        video.plan = list(segments)
        video.host = min(self.hosts, key=lambda host: self._host_load[host])
        self._host_load[video.host] += 1
        self._begin(video)
        return True

    def _begin(self, video: Video) -> None:
        video.segments = deque(video.plan)
        video.taking.append(("start", video.host.start.remote(video.task, self.context)))

    def _submit_segments(self, active: list[Video]) -> None:
        """Segments, oldest video first, up to the cluster's budget."""
        in_flight = sum(video.segments_in_flight for video in active)
        for video in active:
            while video.segments and in_flight < self.plan.max_segments_in_flight:
                models = self.models[next(self._model_turn) % len(self.models)]
                video.decoding.append(process_segment.options(num_cpus=self.plan.segment_cpus).remote(
                    str(video.path), video.task.info, video.segments.popleft(), self.context.options, models))
                in_flight += 1

    def _taken(self, video: Video) -> None:
        kind, ref = video.taking.popleft()
        try:
            result = ray.get(ref)
        except (EmorayError, ray.exceptions.RayError) as error:
            return self._fail(video, error)
        if kind == "take":
            self.frames += result["frames"]
            self.bytes_to_units += result["bytes"]
        if not (video.segments or video.decoding or video.taking):
            video.step, video.step_name = video.host.finish.remote(video.video_id), "finish"

    def _step_done(self, video: Video) -> None:
        """The unit finished its tables, the annotated video is written, or the video is published."""
        ref, name = video.step, video.step_name
        video.step = None
        try:
            result = ray.get(ref)
        except (EmorayError, ray.exceptions.RayError) as error:
            if name == "annotate" and not isinstance(error, LOST):  # the rows are kept: only the drawing failed
                failure = f"annotated video: {_message(error, video.path)}"
                video.step, video.step_name = video.host.publish.remote(video.video_id, failure), "publish"
                return None
            return self._fail(video, error)
        if name == "finish" and result is not None:  # annotate where the unit staged the faces file
            where = NodeAffinitySchedulingStrategy(result["node_id"], soft=False)
            task = annotate.options(num_cpus=self.plan.segment_cpus, scheduling_strategy=where)
            video.step = task.remote(str(video.path), result["destination"], result["faces"],
                                     self.context.options.fps, list(self.context.labels))
            video.step_name = "annotate"
        elif name in ("finish", "annotate"):
            video.step, video.step_name = video.host.publish.remote(video.video_id), "publish"
        else:
            self.outcomes.append(result)

    def _ended(self, video: Video) -> bool:
        return not (video.segments or video.decoding or video.taking or video.step is not None)

    def _fail(self, video: Video, error: BaseException) -> None:
        """A lost unit starts its video again elsewhere; any other error fails the video with the reason:
        its staged parts dropped, rows an earlier run published removed, a failed manifest written."""
        self._drop(video)
        if isinstance(error, LOST) and video.attempts < MAX_ATTEMPTS and video.task:
            host = self._working_host(avoid=video.host)
            if host is not None:
                self._host_load[video.host] -= 1
                self._host_load[host] += 1
                video.host, video.attempts = host, video.attempts + 1
                return self._begin(video)
            error = EmorayError(f"no unit host could take the video again after: {_message(error, video.path)}")
        message = _message(error, video.path)
        for record in (lambda: self.output.unpublish(video.video_id), lambda: self.output.write_manifest(
                video.video_id, {"video_id": video.video_id, "path": str(video.path), "status": FAILED,
                                 "error": message, "fingerprint": self.context.fingerprint,
                                 "models": self.context.model_ids, "outputs": {},
                                 "redone_because": video.redone_because,
                                 "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})):
            try:
                record()
            except OSError as record_error:  # OUT itself failing (a store gone): the summary still says why
                message += f" (not recorded in {self.output.output}: {record_error})"
        self.outcomes.append(VideoOutcome(str(video.path), video.video_id, FAILED, error=message,
                                          seconds=time.monotonic() - video.started))

    def _working_host(self, *, avoid: ray.actor.ActorHandle) -> ray.actor.ActorHandle | None:
        """A unit host that answers: another one if any does, else ``avoid`` once Ray has restarted it
        (a host lost with its node restarts elsewhere in seconds; one bound to a dead node never does).
        Hosts are asked on their health thread, so a busy one answers too; a restarting one is asked again."""
        order = sorted(self.hosts, key=lambda h: (h == avoid, self._host_load[h]))
        deadline = time.monotonic() + HOST_RESTART_SECONDS
        while True:
            pings = {host.ping.remote(): host for host in order}
            done, _ = ray.wait(list(pings), num_returns=len(pings), timeout=HOST_PING_SECONDS)
            answered = [pings[ref] for ref in done if _answered(ref)]
            if answered:
                return min(answered, key=order.index)
            if time.monotonic() >= deadline:
                return None
            time.sleep(1.0)

    def _drop(self, video: Video) -> None:
        """Cancel what is under way for a video and have its unit drop what it staged."""
        for ref in [*video.decoding, *(ref for _, ref in video.taking), *([video.step] if video.step else [])]:
            ray.cancel(ref, force=False)
        video.segments.clear()
        video.decoding.clear()
        video.taking.clear()
        video.step = None
        if video.host is not None:
            video.host.abort.remote(video.video_id)  # after its calls in flight: one caller's calls run in order

    def _interrupt(self, video: Video) -> None:
        """Drop a video the stop request left unfinished: nothing of it published, no manifest."""
        self._drop(video)
        self.outcomes.append(VideoOutcome(str(video.path), video.video_id, INTERRUPTED,
                                          error=f"stopped by {self.stop.signal_name or 'request'} before it finished",
                                          seconds=time.monotonic() - video.started))


def _message(error: BaseException, path: Path) -> str:
    """The user-facing reason, with Ray's wrapping removed and the file named."""
    cause = error.cause if isinstance(error, ray.exceptions.RayTaskError) and error.cause else error
    text = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
    return text if str(path) in text else f"{path}: {text}"


def _answered(ping: ray.ObjectRef) -> bool:
    try:
        return ray.get(ping)
    except ray.exceptions.RayError:  # dead, or restarting: not this round
        return False
