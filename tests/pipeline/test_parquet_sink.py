"""The Parquet sink (``pipeline.sinks.parquet``): what it writes is what DuckDB reads back, and only once published."""

from __future__ import annotations

import json

import duckdb
import numpy as np

from pipeline.results import FaceBatch
from pipeline.sinks.parquet import TABLES, VideoParquetSink

LABELS = ["angry", "happy", "neutral"]


def tracked(start: int, faces_per_frame: list[int], seed: int) -> FaceBatch:
    """A tracked, smoothed batch of consecutive frames at 10 fps, with random boxes and probabilities."""
    rng = np.random.default_rng(seed)
    n, m = sum(faces_per_frame), len(faces_per_frame)
    corners = rng.uniform(0, 500, (n, 2)).astype(np.float32)
    probabilities = rng.dirichlet(np.ones(len(LABELS)), n).astype(np.float32)
    return FaceBatch(
        frame_index=np.arange(start, start + m), pts_time=np.arange(start, start + m) / 10.0,
        face_frame=np.repeat(np.arange(start, start + m), faces_per_frame),
        xyxy=np.concatenate([corners, corners + 60], axis=1), det_score=rng.uniform(0.6, 1, n).astype(np.float32),
        landmarks=rng.uniform(0, 500, (n, 5, 2)).astype(np.float32), probabilities=probabilities,
        face_px=np.full(n, 60, np.float32), yaw=np.zeros(n, np.float32), pitch=np.zeros(n, np.float32),
        sharpness=np.ones(n, np.float32), track_id=np.concatenate([np.arange(k) for k in faces_per_frame]),
        smoothed=probabilities, shot=np.zeros(m, np.int64))


def faces_read_back(out) -> list[tuple]:
    return duckdb.sql(f"""
        SELECT video_id, frame_index, face_index, track_id, x1, y2, emotion, p_angry, p_happy, p_neutral
        FROM read_parquet('{out}/faces/*/*.parquet', hive_partitioning = true)
        ORDER BY frame_index, face_index""").fetchall()


def test_published_rows_read_back_in_duckdb_as_written(tmp_path):
    batches = [tracked(0, [2, 0, 1], seed=1), tracked(3, [1, 2], seed=2)]
    sink = VideoParquetSink(tmp_path, "vid1", "clips/a.mp4", LABELS, {"models": {"detector": "d@1"}},
                            min_episode_seconds=0.5)
    for batch in batches:
        sink.write(batch)
    sink.close()
    assert not (tmp_path / "faces").exists()  # closed but not published: no reader sees the video yet
    sink.publish()

    rows = faces_read_back(tmp_path)
    everything = FaceBatch.concatenate(batches, len(LABELS))
    assert [row[:4] for row in rows] == [("vid1", 0, 0, 0), ("vid1", 0, 1, 1), ("vid1", 2, 0, 0), ("vid1", 3, 0, 0),
                                         ("vid1", 4, 0, 0), ("vid1", 4, 1, 1)]
    read = np.array([row[4:6] + row[7:] for row in rows], np.float64)
    written = np.column_stack([everything.xyxy[:, 0], everything.xyxy[:, 3], everything.probabilities])
    np.testing.assert_array_equal(read, written.astype(np.float32))  # float32 in, the same float32 out
    assert [row[6] for row in rows] == [LABELS[i] for i in everything.probabilities.argmax(axis=1)]
    frames = duckdb.sql(f"SELECT frame_index, num_faces FROM read_parquet('{tmp_path}/frames/*/*.parquet') "
                        "ORDER BY frame_index").fetchall()
    assert frames == [(0, 2), (1, 0), (2, 1), (3, 1), (4, 2)]  # a frame without faces is still a frame
    metadata = duckdb.sql(f"SELECT value FROM parquet_kv_metadata('{tmp_path}/faces/*/*.parquet') "
                          "WHERE key = 'emoray.models'").fetchall()[0][0]
    assert json.loads(metadata) == {"detector": "d@1"}
    assert {path.name for path in tmp_path.iterdir()} == {*TABLES, ".staging"}
    assert not any((tmp_path / ".staging").iterdir())  # the video's staged files are gone


def test_an_aborted_video_leaves_nothing_and_a_rerun_starts_afresh(tmp_path):
    sink = VideoParquetSink(tmp_path, "vid1", "a.mp4", LABELS, {}, min_episode_seconds=0.5)
    sink.write(tracked(0, [1, 1], seed=3))
    sink.abort()
    assert not any(tmp_path.rglob("*.parquet"))

    again = VideoParquetSink(tmp_path, "vid1", "a.mp4", LABELS, {}, min_episode_seconds=0.5)
    again.write(tracked(0, [1], seed=4))
    again.close()
    again.publish()
    assert [row[:3] for row in faces_read_back(tmp_path)] == [("vid1", 0, 0)]
