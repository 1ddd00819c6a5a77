"""``emoray query``: SQL over a job's outputs with DuckDB: views ``faces``, ``frames``, ``tracks``, ``episodes`` and ``videos``.

Every row of the four Parquet views has a ``session_id``: a live session's (its frame indexes and track
ids start from 0 in each session of a source) or ``''`` for batch rows, so one set of keys joins both:
``(video_id, session_id)`` for a frame's rows, ``(video_id, session_id, track_id)`` for a track.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from models.errors import EmorayError
from pipeline.outputs import PublishedOutputs
from pipeline.persons.across import JOB_PERSONS
from pipeline.sinks.live_parquet import SESSION_ID
from pipeline.sinks.parquet import TABLES

VIDEOS_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("path", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("frames", pa.int64()), ("faces", pa.int64()), ("dominant_emotion", pa.string()),
    ("detector", pa.string()), ("emotion_model", pa.string()), ("seconds", pa.float64()), ("finished_at", pa.string()),
    ("redone_because", pa.string()),
])


class QueryError(EmorayError, ValueError):
    """The SQL failed or the output directory has no results."""


def videos_table(outputs: PublishedOutputs) -> pa.Table:
    """One row per video of OUT's manifests: what completed, what failed and why, with which models, and
    why an earlier run's results of it were redone (damaged files, a failure, other options; null: first run)."""
    rows = []
    for manifest in outputs.manifests():
        counts, models = manifest.get("counts") or {}, manifest.get("models") or {}
        rows.append({
            "video_id": manifest.get("video_id"), "path": manifest.get("path"), "status": manifest.get("status"),
            "error": manifest.get("error"), "frames": counts.get("frames"), "faces": counts.get("faces"),
            "dominant_emotion": manifest.get("dominant_emotion"), "detector": models.get("detector"),
            "emotion_model": models.get("emotion_model"), "seconds": (manifest.get("timings") or {}).get("seconds"),
            "finished_at": manifest.get("finished_at"), "redone_because": manifest.get("redone_because"),
        })
    return pa.Table.from_pylist(rows, schema=VIDEOS_SCHEMA)


def connect(out: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with views over OUT's hive-partitioned Parquet datasets and its manifests.

    Only published parts are read: a video's rows appear when it completes (hidden staged files and
    the parts of videos still running are not matched). OUT may be a folder or an object-store URI.
    """
    outputs = PublishedOutputs(out)
    if not outputs.is_uri and not Path(out).is_dir():
        raise QueryError(f"{out}: no such output folder")
    connection = duckdb.connect()
    videos = videos_table(outputs)
    found = len(videos) > 0
    connection.register("videos", videos)
    for table in TABLES:
        if outputs.is_uri:  # read through pyarrow's filesystem (DuckDB's own would need an extension download)
            dataset = outputs.dataset(table)
            if dataset is None:
                continue
            connection.register(f"_{table}_parts", dataset)
            rows = f"_{table}_parts"
        elif outputs.parts(table):
            pattern = str(Path(out) / table / "*" / "*.parquet").replace("'", "''")
            rows = f"read_parquet('{pattern}', hive_partitioning = true, union_by_name = true)"
        else:
            continue
        found = True
        connection.execute(f"CREATE VIEW {table} AS {_with_session_id(connection, rows)}")
    job_persons = outputs.job_table(JOB_PERSONS)  # --persons across
    if job_persons is not None:
        connection.register(JOB_PERSONS, job_persons)
    if not found:
        raise QueryError(f"{out}: no results (expected {out}/faces/video_id=*/, {out}/frames/video_id=*/ "
                         f"or {out}/manifest/)")
    return connection


def _with_session_id(connection: duckdb.DuckDBPyConnection, rows: str) -> str:
    """``SELECT`` every column of ``rows`` with a ``session_id`` for each row: a live session's, or ``''``."""
    names = {row[0] for row in connection.execute(f"DESCRIBE SELECT * FROM {rows}").fetchall()}
    if SESSION_ID in names:
        return f"SELECT * REPLACE (coalesce({SESSION_ID}, '') AS {SESSION_ID}) FROM {rows}"
    return f"SELECT *, '' AS {SESSION_ID} FROM {rows}"


def query(out: str | Path, sql: str) -> duckdb.DuckDBPyRelation:
    """Run ``sql`` against OUT's views: ``faces``, ``frames``, ``tracks``, ``episodes`` and ``videos``."""
    try:
        return connect(out).sql(sql)
    except duckdb.Error as error:
        raise QueryError(f"query failed: {error}") from error
