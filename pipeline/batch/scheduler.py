"""Batch mode's driver: discovers the inputs, skips what is complete, and schedules every video through Ray.

``inspect_video`` (probe + plan) -> ``process_segment`` tasks (decode, the face step) -> the video's unit
(``pipeline.batch.video``: tracks, smooths, writes) -> ``annotate`` task -> the unit publishes the rows and
writes the manifest, last. The driver passes references and gets one small summary per segment and per
video: none of its work grows with the frames or faces of a job. A failing video is recorded with its error,
publishes no rows and never stops the others. A ``StopRequest`` (SIGINT, SIGTERM) ends the job at the next
safe point: finished videos stay, unfinished ones leave nothing visible.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections import deque
from pathlib import Path
from typing import Callable

import ray

from jobs.cluster import connect
from jobs.storage import is_uri
from jobs.discover import MEDIA_EXTENSIONS, discover, video_id
from jobs.files import name_max
from jobs.lock import output_lock
from jobs.manifest import COMPLETE, FAILED, redo_reason
from jobs.spec import JobSpec, RunOptions
from pipeline.batch.flow import INTERRUPTED, SKIPPED, Video, VideoFlow, annotated_names
from pipeline.batch.output import JobOutput, check_output_writable
from pipeline.batch.video import JobContext, VideoOutcome, start_unit_hosts
from pipeline.errors import InputError
from pipeline.cluster_models import ActorModels, ClusterPlan, object_store_bytes, start_actors
from pipeline.outputs import PublishedOutputs
from pipeline.persons.across import JOB_PERSONS, embeddings_path, job_persons_table
from pipeline.sinks.parquet import PART_NAME, PERSONS, STAGING
from pipeline.stages import inspect_video
from pipeline.stopping import StopRequest

__all__ = ["BatchJob", "INTERRUPTED", "SKIPPED", "connect_for"]
log = logging.getLogger(__name__)


class _Interrupted(Exception):
    """The job's ``StopRequest`` was set before the models were ready."""


def connect_for(options: RunOptions, address: str | None, *, dashboard: bool = False) -> None:
    """Join ``address`` or start the embedded Ray, with an object store sized to the job."""
    connect(address, dashboard=dashboard, object_store_bytes=object_store_bytes(options, os.cpu_count() or 1))


class BatchJob:
    """Runs one ``JobSpec`` on the Ray cluster ``ray.init`` connected to."""

    def __init__(self, spec: JobSpec, *, on_progress: Callable[[dict], None] | None = None,
                 stop: StopRequest | None = None) -> None:
        self.spec, self.options = spec, spec.options
        self.stop = stop or StopRequest()
        self.on_progress = on_progress or (lambda state: None)
        self.outcomes: list[VideoOutcome] = []
        self.model_ids: dict = {}
        self.fingerprint: str | None = None
        self.bytes_to_units = 0
        self.summary: dict = {}  # job.json, once run

    def run(self) -> list[VideoOutcome]:
        """Process the job; holds the output folder's lock (one writer per folder) while it runs.

        Raises:
            OutputError, OutputLockedError, InputError: before any work, with the reason.
        """
        check_output_writable(self.spec.output)
        self.output = JobOutput(self.spec.output)
        try:
            with output_lock(self.spec.output):
                return self._run()
        finally:
            self.output.close()

    def placement(self) -> str | None:
        """Where videos are finished, for the run's first lines; None on a one-node cluster, where all is."""
        if sum(node["Alive"] for node in ray.nodes()) < 2:
            return None
        if not is_uri(self.spec.output):
            return (f"{self.spec.output} is a folder on this machine: each video is tracked, written and annotated "
                    "on this node; decoding and the models run across the cluster")
        return f"{self.spec.output} is in an object store: each video is tracked, written and annotated on any node"

    def _run(self) -> list[VideoOutcome]:
        started, started_cpu = time.monotonic(), time.process_time()
        shutil.rmtree(self.output.root / STAGING, ignore_errors=True)  # parts of videos a killed run left unfinished
        found = discover(list(self.spec.inputs), glob=self.spec.glob, output=self.spec.output)
        self.outcomes = [VideoOutcome(str(p), None, FAILED, error=reason) for p, reason in found.refused]
        self.outcomes += [VideoOutcome(str(p), None, SKIPPED, error=reason) for p, reason in found.skipped]
        self.outcomes += [VideoOutcome(str(folder), None, SKIPPED, error=f"{folder}: an emoray output folder, not searched")
                          for folder in found.output_folders]
        if not found.inputs and not found.refused:
            raise InputError(_no_inputs_message(self.spec))
        nodes = [node for node in ray.nodes() if node["Alive"]]
        self.plan = plan = ClusterPlan.for_cluster(ray.cluster_resources(), [n["Resources"].get("CPU", 0) for n in nodes])
        actors = start_actors(self.options, plan)
        hosts = self._start_hosts(plan, [node["NodeID"] for node in nodes])
        try:  # the actors hold their CPUs or GPU until killed, whatever happens here
            candidates = self._candidates(found.inputs)
            # probe the first videos while the models load (a short job waits less for its first worker)
            early = {self._inspect(video): video for video in candidates[:plan.max_segments_in_flight + 1]}
            models = ActorModels(actors[0], self._get(actors[0].info.remote()))
            self.model_ids = models.model_ids()
            self.fingerprint = self.options.fingerprint(self.model_ids)
            context = JobContext(tuple(models.labels), self.model_ids, self.fingerprint, self.options, models)
            todo = self._not_complete(candidates)
            pending = {id(video) for video in todo}
            for ref in [ref for ref, video in early.items() if id(video) not in pending]:  # complete already
                del early[ref]
                ray.cancel(ref)
            flow = VideoFlow(context, self.output, plan, [models.on(actor) for actor in actors], hosts, stop=self.stop)
            done, total = len(self.outcomes), len(todo) + len(self.outcomes)
            try:
                flow.run(todo, early, lambda state: self.on_progress(state | {"done": state["done"] + done,
                                                                               "total": total}))
            finally:
                self.outcomes += flow.outcomes
                self.bytes_to_units = flow.bytes_to_units
            if self.options.persons == "across" and not self.stop.is_set():
                self._link_persons(candidates)
        except _Interrupted:
            pass
        finally:
            _close(hosts)
            for actor in actors:
                ray.kill(actor)
        with contextlib.suppress(OSError):
            (self.output.root / STAGING).rmdir()  # empty unless a video failed to clean up
        self._write_job_json(time.monotonic() - started, time.process_time() - started_cpu)
        return self.outcomes

    def _start_hosts(self, plan: ClusterPlan, node_ids: list[str]) -> list[ray.actor.ActorHandle]:
        if self.output.is_local:  # this node's disk: every unit host here
            return start_unit_hosts(self.spec.output, [ray.get_runtime_context().get_node_id()] * plan.unit_hosts,
                                    pinned=True)
        # a store: videos are finished anywhere, a unit host on every node (more on the first ones)
        return start_unit_hosts(self.spec.output, [node_ids[i % len(node_ids)]
                                                   for i in range(max(plan.unit_hosts, len(node_ids)))], pinned=False)

    def _get(self, ref: ray.ObjectRef):
        """``ray.get`` that gives way to the stop request."""
        while not ray.wait([ref], timeout=0.25)[0]:
            if self.stop.is_set():
                raise _Interrupted
        return ray.get(ref)

    def _candidates(self, inputs: list[tuple[Path, Path]]) -> list[Video]:
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
            candidates.append(Video(path, Path(relative), identity))
        for video, name in zip(candidates, annotated_names(candidates, name_max(self.output.root))):
            video.annotated = name
        return candidates

    def _not_complete(self, candidates: list[Video]) -> deque:
        """Videos to process: not already complete with these models and options, and intact (unless --force)."""
        todo = deque()
        for video in candidates:
            manifest = self.output.read_manifest(video.video_id)
            reason = "--force" if self.spec.force else redo_reason(manifest, self.fingerprint,
                                                                     annotate=self.options.annotate)
            video.redone_because = reason if manifest else None
            if reason is None:
                counts = manifest.get("counts", {})
                self.outcomes.append(VideoOutcome(str(video.path), video.video_id, SKIPPED, counts.get("frames", 0),
                                                  counts.get("faces", 0), manifest.get("dominant_emotion"),
                                                  error="already complete"))
                continue
            todo.append(video)
        return todo

    def _link_persons(self, candidates: list[Video]) -> None:
        """``--persons across``: the persons of every complete video of the job linked (OUT/job_persons/)."""
        known = {video.video_id: video for video in candidates}
        published, videos = PublishedOutputs(self.spec.output), []
        for outcome in self.outcomes:
            video = known.get(outcome.video_id)
            if video is None or not (outcome.status == COMPLETE or outcome.error == "already complete"):
                continue
            rows = published.table(PERSONS, video.video_id)
            record = self.output.read_json(embeddings_path(self.output.root, video.video_id))
            if rows is not None and record is not None:
                videos.append((str(video.relative), video.video_id, str(video.path), rows.to_pylist(), record))
        try:
            self.output.write_table(self.output.root / JOB_PERSONS / PART_NAME, job_persons_table(videos))
        except OSError as error:
            log.warning("%s: the job's persons were not written (%s)", self.spec.output, error)

    def _inspect(self, video: Video) -> ray.ObjectRef:
        return inspect_video.remote(str(video.path), self.options.segment_seconds)

    def _write_job_json(self, seconds: float, driver_cpu_s: float) -> None:
        self.summary = self._summary(seconds, driver_cpu_s)
        try:
            self.output.write_json(self.output.root / "job.json", self.summary)
        except OSError as error:  # OUT failing at the end (a store gone): the outcomes are still returned
            log.warning("%s: job.json not written (%s)", self.spec.output, error)

    def _summary(self, seconds: float, driver_cpu_s: float) -> dict:
        failed = [o for o in self.outcomes if o.status == FAILED]
        return {
            "spec": self.spec.to_dict(), "models": self.model_ids, "fingerprint": self.fingerprint,
            "summary": {"videos": len(self.outcomes), "failed": len(failed),
                        "interrupted": sum(o.status == INTERRUPTED for o in self.outcomes),
                        "stopped_by": self.stop.signal_name if self.stop.is_set() else None,
                        "frames": sum(o.frames for o in self.outcomes if o.status == "complete"),
                        "faces": sum(o.faces for o in self.outcomes if o.status == "complete"),
                        "seconds": round(seconds, 3), "driver_cpu_s": round(driver_cpu_s, 3),
                        "bytes_to_units": self.bytes_to_units},
            "videos": [vars(o) for o in self.outcomes],
        }


def _close(hosts: list) -> None:
    """End the unit hosts: each drops what it still holds (an unfinished video's staged parts), then goes."""
    with contextlib.suppress(ray.exceptions.RayError):
        ray.get([host.close.remote() for host in hosts], timeout=30)
    for host in hosts:
        ray.kill(host)


def _no_inputs_message(spec: JobSpec) -> str:
    where = ", ".join(spec.inputs)
    matching = f", matching --glob {spec.glob!r}" if spec.glob else ""
    return f"no inputs found under {where} (extensions {' '.join(sorted(MEDIA_EXTENSIONS))}{matching})"
