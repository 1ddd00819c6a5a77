"""``emoray query``: SQL over a job's outputs with DuckDB: views ``faces``, ``frames``, ``tracks``, ``episodes`` and ``videos``."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from jobs.manifest import read_manifests
from models.errors import EmorayError
from pipeline.sinks.parquet import FACES, FRAMES, TABLES

VIDEOS_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("path", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("frames", pa.int64()), ("faces", pa.int64()), ("dominant_emotion", pa.string()),
    ("detector", pa.string()), ("emotion_model", pa.string()), ("seconds", pa.float64()), ("finished_at", pa.string()),
])


class QueryError(EmorayError, ValueError):
    """The SQL failed or the output directory has no results."""


def videos_table(out: str | Path) -> pa.Table:
    """One row per video of OUT's manifests: what completed, what failed and why, with which models."""
    rows = []
    for manifest in read_manifests(Path(out)):
        counts, models = manifest.get("counts") or {}, manifest.get("models") or {}
        rows.append({
            "video_id": manifest.get("video_id"), "path": manifest.get("path"), "status": manifest.get("status"),
            "error": manifest.get("error"), "frames": counts.get("frames"), "faces": counts.get("faces"),
            "dominant_emotion": manifest.get("dominant_emotion"), "detector": models.get("detector"),
            "emotion_model": models.get("emotion_model"), "seconds": (manifest.get("timings") or {}).get("seconds"),
            "finished_at": manifest.get("finished_at"),
        })
    return pa.Table.from_pylist(rows, schema=VIDEOS_SCHEMA)


def connect(out: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with views over OUT's hive-partitioned Parquet datasets and its manifests.

    Only published parts are read: a video's rows appear when it completes (hidden staged files and
    the parts of videos still running are not matched by the pattern).
    """
    out = Path(out)
    connection = duckdb.connect()
    videos = videos_table(out)
    found = len(videos) > 0
    connection.register("videos", videos)
    for table in TABLES:
        files = sorted((out / table).glob("video_id=*/*.parquet"))
        if not files:
            continue
        found = True
        pattern = str(out / table / "*" / "*.parquet").replace("'", "''")
        connection.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{pattern}', hive_partitioning = true, union_by_name = true)"
        )
    if not found:
        raise QueryError(f"{out}: no results (expected {out}/faces/video_id=*/, {out}/frames/video_id=*/ "
                         f"or {out}/manifest/)")
    return connection


def query(out: str | Path, sql: str) -> duckdb.DuckDBPyRelation:
    """Run ``sql`` against OUT's views: ``faces``, ``frames``, ``tracks``, ``episodes`` and ``videos``."""
    try:
        return connect(out).sql(sql)
    except duckdb.Error as error:
        raise QueryError(f"query failed: {error}") from error
