"""Live results as Parquet parts rolled every N seconds, in the batch layout plus capture time and latency.

``OUT/faces/video_id=<stream id>/part-<session id>-<n>.parquet`` and the same under ``frames/``: the
batch schema (so ``emoray query``, DuckDB and pandas read live and batch output alike) with three more
columns, ``capture_time`` (UTC timestamp), ``latency_ms`` (capture to result) and ``session_id``. Each
part is written under a temporary name and renamed, so a crash loses at most the part being filled.
With each part, this session's ``tracks`` and ``episodes`` (``OUT/tracks/video_id=<stream id>/session-
<session id>.parquet``, with ``session_id`` too) are written again from running per-track totals, so they
stay current as parts roll at a cost that does not grow with the session's length.

A source keeps its ``video_id`` from session to session, while frame indexes and track ids start again
from 0 in each: rows of one session are ``(video_id, session_id)``, a track is ``(video_id, session_id,
track_id)``. The session id is the UTC start time and a random suffix (``20250301T101500Z-3f9a1c``).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.files import move_into_place
from jobs.spec import ROLL_SECONDS, ModelOptions
from pipeline.persons.table import persons_table
from pipeline.results import NO_PERSON, FaceBatch
from pipeline.timeline import TimelineTotals
from pipeline.sinks.parquet import (
    EPISODES, FACES, FRAMES, PERSONS, TRACKS, encode_metadata, faces_schema, frames_schema, partition_dir, result_columns,
)

CAPTURE_TIME, LATENCY_MS, SESSION_ID, SOURCE = "capture_time", "latency_ms", "session_id", "source"
_LIVE_FIELDS = [pa.field(CAPTURE_TIME, pa.timestamp("us", tz="UTC")), pa.field(LATENCY_MS, pa.float32()),
                pa.field(SESSION_ID, pa.string()), pa.field(SOURCE, pa.string())]


def stream_id(name: str) -> str:
    """A stable id for a live source (20 hex digits, like a video id), from its redacted URL."""
    return hashlib.blake2b(name.encode(), digest_size=10).hexdigest()


def new_session_id() -> str:
    """Unique to one live session: its UTC start and 24 random bits (two sessions may start in one second)."""
    return f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


class RollingPartsWriter:
    """Buffers processed frames and writes a ``faces`` and a ``frames`` part every ``roll_seconds``.

    ``write`` takes each tracked one-frame batch (with its capture time and latency) and ``close``
    writes what is buffered; ``paths`` lists the parts written.
    """

    def __init__(self, out: Path, source_name: str, labels: list[str], metadata: dict[str, object],
                 roll_seconds: float = ROLL_SECONDS, *,
                 min_episode_seconds: float = ModelOptions.min_episode_seconds, name: str | None = None,
                 session_id: str | None = None) -> None:
        self.source_name, self.labels, self.roll_seconds = source_name, list(labels), roll_seconds
        self.name = name or source_name  # the source's name in a session of several (the "source" column)
        self.video_id = stream_id(self.name)  # the names of a session's sources differ, so do their partitions
        encoded = encode_metadata(metadata)
        self._schemas = {FACES: _with_live_fields(faces_schema(self.labels, encoded)),
                         FRAMES: _with_live_fields(frames_schema(encoded))}
        self.timeline = TimelineTotals(self.labels, min_episode_seconds)
        self._metadata = encoded
        self.session_id = session_id or new_session_id()  # one for all sources of a session
        self._dirs = {table: partition_dir(Path(out), table, self.video_id)
                      for table in (FACES, FRAMES, TRACKS, EPISODES, PERSONS)}
        self._person_of_track: dict[int, int] = {}
        for directory in self._dirs.values():
            directory.mkdir(parents=True, exist_ok=True)
        self._buffer: list[FaceBatch] = []
        self._part_started = time.monotonic()
        self.parts_written = 0
        self.paths: list[str] = []

    def write(self, batch: FaceBatch) -> None:
        self._buffer.append(batch)
        if time.monotonic() - self._part_started >= self.roll_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the buffered frames as one part (nothing when the buffer is empty)."""
        buffered, self._buffer = self._buffer, []
        self._part_started = time.monotonic()
        if not buffered:
            return
        batch = FaceBatch.concatenate(buffered, len(self.labels))
        capture, latency = batch.capture_time, batch.latency_ms.astype(np.float32)
        faces, frames = result_columns(batch, self.labels, self.source_name)
        per_face = batch.faces_per_frame()
        name = f"part-{self.session_id}-{self.parts_written:06d}.parquet"
        for table, columns, capture_times, latencies in (
            (FACES, faces, np.repeat(capture, per_face), np.repeat(latency, per_face)),
            (FRAMES, frames, capture, latency),
        ):
            columns = columns | {CAPTURE_TIME: pa.array((capture_times * 1e6).astype(np.int64), pa.timestamp("us", tz="UTC")),
                                 LATENCY_MS: latencies, SESSION_ID: pa.array([self.session_id] * len(latencies), pa.string()),
                                 SOURCE: pa.array([self.name] * len(latencies), pa.string())}
            target = self._dirs[table] / name
            temporary = target.with_name(f".{name}.tmp")
            pq.write_table(pa.table(columns, schema=self._schemas[table]), temporary)
            move_into_place(temporary, target)
            self.paths.append(str(target))
        self.parts_written += 1
        self.timeline.add(batch)
        if batch.person_id is not None:  # each track's person, once live mode matched it
            known = batch.person_id != NO_PERSON
            self._person_of_track.update(zip(batch.track_id[known].tolist(), batch.person_id[known].tolist()))
        self._write_timeline()

    def _write_timeline(self) -> None:
        """This session's ``tracks``, ``episodes`` and ``persons`` so far (one file each, replaced), from running
        totals."""
        tables = self.timeline.tables(self._person_of_track)
        tables[PERSONS] = persons_table(tables[TRACKS], self._person_of_track, self.labels)
        for table, rows in tables.items():
            target = self._dirs[table] / f"session-{self.session_id}.parquet"
            temporary = target.with_name(f".{target.name}.tmp")
            rows = rows.append_column(SESSION_ID, pa.array([self.session_id] * rows.num_rows, pa.string()))
            rows = rows.append_column(SOURCE, pa.array([self.name] * rows.num_rows, pa.string()))
            pq.write_table(rows.replace_schema_metadata(self._metadata), temporary)
            move_into_place(temporary, target)

    def close(self) -> None:
        self.flush()


def _with_live_fields(schema: pa.Schema) -> pa.Schema:
    return pa.schema(list(schema) + _LIVE_FIELDS, metadata=schema.metadata)
