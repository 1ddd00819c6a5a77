"""The ``faces``, ``frames``, ``tracks`` and ``episodes`` Parquet datasets: the output contract analytics users rely on.

Layout: ``OUT/<table>/video_id=<id>/part-0.parquet`` (hive partitions: ``video_id`` comes from the
folder name, so DuckDB, Polars, pandas and Spark read each folder as one table). Model ids and
options are in each file's key-value metadata. Files are written in the hidden ``OUT/.staging/`` and
moved into place when their video completes.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.files import move_into_place
from pipeline.persons.follow import PersonLabels
from pipeline.persons.table import person_embeddings, persons_table, with_embeddings
from pipeline.results import NO_PERSON, FaceBatch
from pipeline.timeline import TimelineTotals

FACES, FRAMES, TRACKS, EPISODES, PERSONS = "faces", "frames", "tracks", "episodes", "persons"
TABLES = (FACES, FRAMES, TRACKS, EPISODES, PERSONS)
PART_NAME = "part-0.parquet"
STAGING = ".staging"
VIDEO_PATH, FRAME_INDEX, PTS_TIME = "video_path", "frame_index", "pts_time"
FACE_INDEX, TRACK_ID, PERSON_ID = "face_index", "track_id", "person_id"
BOX_COLUMNS = ("x1", "y1", "x2", "y2")
DET_SCORE, LANDMARKS, EMOTION, EMOTION_SCORE = "det_score", "landmarks", "emotion", "emotion_score"
QUALITY_COLUMNS = ("face_px", "yaw", "pitch", "sharpness")  # FaceBatch arrays of the same names
NUM_FACES, SHOT = "num_faces", "shot"
SMOOTHED_EMOTION, SMOOTHED_SCORE = "smoothed_emotion", "smoothed_score"


def encode_metadata(metadata: dict[str, object]) -> dict[str, str]:
    """Key-value metadata of emoray's Parquet files: ``emoray.<key>``, JSON for anything but strings."""
    return {f"emoray.{key}": value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}


def probability_column(label: str) -> str:
    return f"p_{label}"


def faces_schema(labels: list[str], metadata: dict[str, str]) -> pa.Schema:
    """The faces table."""
    fields = [
        pa.field(VIDEO_PATH, pa.string()), pa.field(FRAME_INDEX, pa.int64()), pa.field(PTS_TIME, pa.float64()),
        pa.field(FACE_INDEX, pa.int32()), pa.field(TRACK_ID, pa.int64()), pa.field(PERSON_ID, pa.int64()),
        *[pa.field(name, pa.float32()) for name in BOX_COLUMNS],
        pa.field(DET_SCORE, pa.float32()), pa.field(LANDMARKS, pa.list_(pa.float32())),
        *[pa.field(name, pa.float32()) for name in QUALITY_COLUMNS],
        pa.field(EMOTION, pa.string()), pa.field(EMOTION_SCORE, pa.float32()),
        *[pa.field(probability_column(label), pa.float32()) for label in labels],
        pa.field(SMOOTHED_EMOTION, pa.string()), pa.field(SMOOTHED_SCORE, pa.float32()),
    ]
    return pa.schema(fields, metadata=metadata)


def smoothed_columns(smoothed: np.ndarray, labels: list[str]) -> dict:
    """``smoothed_emotion`` and ``smoothed_score`` of (n, k) smoothed probabilities."""
    best = smoothed.argmax(axis=1) if len(smoothed) else np.zeros(0, np.int64)
    return {SMOOTHED_EMOTION: pa.array(np.array(labels, dtype=object)[best] if len(best) else [], pa.string()),
            SMOOTHED_SCORE: smoothed.max(axis=1) if len(smoothed) else np.zeros(0, np.float32)}


def person_column(person_id: np.ndarray | None, n: int) -> pa.Array:
    """``person_id`` as Parquet holds it: null where there is no person (``NO_PERSON``) or none is known."""
    if person_id is None:
        return pa.nulls(n, pa.int64())
    return pa.array(person_id, pa.int64(), mask=person_id == NO_PERSON)


def frames_schema(metadata: dict[str, str]) -> pa.Schema:
    return pa.schema([
        pa.field(VIDEO_PATH, pa.string()), pa.field(FRAME_INDEX, pa.int64()), pa.field(PTS_TIME, pa.float64()),
        pa.field(NUM_FACES, pa.int32()), pa.field(SHOT, pa.int64()),
    ], metadata=metadata)


def partition_dir(out: Path, table: str, video_id: str) -> Path:
    return out / table / f"video_id={video_id}"


def result_columns(batch: FaceBatch, labels: list[str], video_path: str) -> tuple[dict, dict]:
    """The ``faces`` and ``frames`` columns of a tracked batch (one dict of arrays per table)."""
    per_frame = batch.faces_per_frame()
    face_index = np.concatenate([np.arange(count, dtype=np.int32) for count in per_frame] or [np.zeros(0, np.int32)])
    best = batch.probabilities.argmax(axis=1) if len(batch) else np.zeros(0, np.int64)
    n = len(batch)
    faces = {
        VIDEO_PATH: pa.array([video_path] * n, pa.string()),
        FRAME_INDEX: batch.face_frame, PTS_TIME: np.repeat(batch.pts_time, per_frame), FACE_INDEX: face_index,
        TRACK_ID: batch.track_id, PERSON_ID: person_column(batch.person_id, n),
        **{name: batch.xyxy[:, i] for i, name in enumerate(BOX_COLUMNS)},
        DET_SCORE: batch.det_score,
        LANDMARKS: pa.ListArray.from_arrays(
            np.arange(0, 10 * n + 1, 10, dtype=np.int32), pa.array(batch.landmarks.reshape(-1), pa.float32())
        ),
        **{name: getattr(batch, name) for name in QUALITY_COLUMNS},
        EMOTION: pa.array(np.array(labels, dtype=object)[best] if n else [], pa.string()),
        EMOTION_SCORE: batch.probabilities.max(axis=1) if n else np.zeros(0, np.float32),
        **{probability_column(label): batch.probabilities[:, i] for i, label in enumerate(labels)},
        **smoothed_columns(batch.smoothed, labels),
    }
    frames = {
        VIDEO_PATH: pa.array([video_path] * batch.num_frames, pa.string()),
        FRAME_INDEX: batch.frame_index, PTS_TIME: batch.pts_time, NUM_FACES: per_frame,
        SHOT: pa.nulls(batch.num_frames, pa.int64()) if batch.shot is None else batch.shot,
    }
    return faces, frames


def staging_dir(out: Path, video_id: str) -> Path:
    """Where a video's parts are written until the video completes: hidden from every reader of OUT."""
    return out / STAGING / video_id


def remove_published(out: Path, video_id: str) -> None:
    """Delete a video's published parts (a failed rerun must not leave older rows visible)."""
    for table in TABLES:
        folder = partition_dir(out, table, video_id)
        (folder / PART_NAME).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()


class VideoParquetSink:
    """Streams one video's final rows, in order, into its ``faces`` and ``frames`` tables, and on close its
    ``tracks``, ``episodes`` (running totals, ``pipeline.timeline``) and ``persons``.

    Follows write/close/publish (or abort): the files are written in ``OUT/.staging/<video_id>/``
    and appear in their partitions only on ``publish()``, just before the manifest, so a reader of
    ``faces/`` never sees rows of a video that is half done, failed or killed. With ``persons`` the persons
    are known only when the video ends: the faces rows are staged without them, and ``close`` streams them
    once more into the final file with each row's final track (split at identity switches) and person.
    """

    def __init__(self, out: Path, video_id: str, video_path: str, labels: list[str], metadata: dict[str, object], *,
                 min_episode_seconds: float, persons: bool = False, keep_embeddings: bool = False) -> None:
        self.video_path, self.labels, self.persons, self.keep_embeddings = video_path, list(labels), persons, keep_embeddings
        self._metadata = encode_metadata(metadata)
        self._targets = {table: partition_dir(out, table, video_id) / PART_NAME for table in TABLES}
        self._staging = staging_dir(out, video_id)
        shutil.rmtree(self._staging, ignore_errors=True)  # left by a run that was killed
        self._staging.mkdir(parents=True)
        self.staged = {table: self._staging / f"{table}.parquet" for table in TABLES}
        self._faces_path = self._staging / "faces-before-persons.parquet" if persons else self.staged[FACES]
        self._schema = faces_schema(self.labels, self._metadata)
        self._writers = {FACES: pq.ParquetWriter(self._faces_path, self._schema),
                         FRAMES: pq.ParquetWriter(self.staged[FRAMES], frames_schema(self._metadata))}
        self.timeline = TimelineTotals(self.labels, min_episode_seconds)
        self.frames_written = self.faces_written = 0
        self.emotion_counts = np.zeros(len(self.labels), np.int64)

    def write(self, batch: FaceBatch) -> None:
        """Append the next final (tracked, smoothed) rows of the video (batches must come in order)."""
        faces, frames = result_columns(batch, self.labels, self.video_path)
        self._writers[FACES].write_table(pa.table(faces, schema=self._schema))
        self._writers[FRAMES].write_table(pa.table(frames, schema=self._writers[FRAMES].schema))
        if not self.persons:
            self.timeline.add(batch)
        self.frames_written += batch.num_frames
        self.faces_written += len(batch)
        if len(batch):
            self.emotion_counts += np.bincount(batch.probabilities.argmax(axis=1), minlength=len(self.labels))

    def close(self, persons: PersonLabels | None = None) -> dict[str, Path]:
        """Finish the tables, still staged (the annotated video is drawn from them); returns their paths."""
        for writer in self._writers.values():
            writer.close()
        if self.persons:
            self._add_persons(persons)
        person_of_track = persons.person_of_track if persons else None
        tables = self.timeline.tables(person_of_track)
        tables[PERSONS] = persons_table(tables[TRACKS], person_of_track or {}, self.labels)
        if self.keep_embeddings and persons:
            tables[PERSONS] = with_embeddings(tables[PERSONS], person_embeddings(persons.appearances, person_of_track))
        for table, rows in tables.items():
            pq.write_table(rows.replace_schema_metadata(self._metadata), self.staged[table])
        return dict(self.staged)

    def _add_persons(self, persons: PersonLabels) -> None:
        """Stream the staged faces into the final file with each row's final track and person, and total them."""
        label_index = {label: i for i, label in enumerate(self.labels)}
        names = self._schema.names
        with pq.ParquetFile(self._faces_path) as source, pq.ParquetWriter(self.staged[FACES], self._schema) as writer:
            for batch in source.iter_batches(batch_size=1 << 16):
                rows = pa.Table.from_batches([batch])
                column = {name: rows.column(name).to_numpy(zero_copy_only=False) for name in names if name != LANDMARKS}
                track, person = persons.apply(column[TRACK_ID], column[PTS_TIME])
                rows = rows.set_column(names.index(TRACK_ID), TRACK_ID, pa.array(track, pa.int64()))
                rows = rows.set_column(names.index(PERSON_ID), PERSON_ID, person_column(person, len(person)))
                writer.write_table(rows)
                self.timeline.add_rows(
                    track, column[FRAME_INDEX], column[PTS_TIME], np.stack([column[b] for b in BOX_COLUMNS], axis=1),
                    column[DET_SCORE], np.stack([column[probability_column(l)] for l in self.labels], axis=1),
                    np.array([label_index[l] for l in column[SMOOTHED_EMOTION]], np.int64), column[SMOOTHED_SCORE])
        self._faces_path.unlink()

    def publish(self) -> dict[str, str]:
        """Move the closed files into their partitions; returns the final paths."""
        for table, staged in self.staged.items():
            self._targets[table].parent.mkdir(parents=True, exist_ok=True)
            move_into_place(staged, self._targets[table])
        shutil.rmtree(self._staging, ignore_errors=True)
        return {table: str(path) for table, path in self._targets.items()}

    def abort(self) -> None:
        """Drop everything written so far."""
        for writer in self._writers.values():
            with contextlib.suppress(OSError, pa.ArrowException):
                writer.close()
        shutil.rmtree(self._staging, ignore_errors=True)

    @property
    def dominant_emotion(self) -> str | None:
        return self.labels[int(self.emotion_counts.argmax())] if self.emotion_counts.sum() else None
