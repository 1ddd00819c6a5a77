"""``emoray query``: SQL over a job's outputs with DuckDB, views ``faces`` and ``frames``."""

from __future__ import annotations

from pathlib import Path

import duckdb

from models.errors import EmorayError
from pipeline.sinks.parquet import FACES, FRAMES


class QueryError(EmorayError, ValueError):
    """The SQL failed or the output directory has no results."""


def connect(out: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with views over OUT's hive-partitioned Parquet datasets."""
    out = Path(out)
    connection = duckdb.connect()
    found = False
    for table in (FACES, FRAMES):
        files = sorted((out / table).glob("video_id=*/*.parquet"))
        if not files:
            continue
        found = True
        pattern = str(out / table / "*" / "*.parquet").replace("'", "''")
        connection.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{pattern}', hive_partitioning = true, union_by_name = true)"
        )
    if not found:
        raise QueryError(f"{out}: no results (expected {out}/faces/video_id=*/ and {out}/frames/video_id=*/)")
    return connection


def query(out: str | Path, sql: str) -> duckdb.DuckDBPyRelation:
    """Run ``sql`` against OUT's ``faces`` and ``frames`` views."""
    try:
        return connect(out).sql(sql)
    except duckdb.Error as error:
        raise QueryError(f"query failed: {error}") from error
