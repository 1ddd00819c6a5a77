"""``--persons across``: the persons of a job's videos linked into persons of the job (a study's participants
seen in many recordings).

Each video's unit keeps its persons' mean face embeddings in ``OUT/.persons/<video_id>.json`` (hidden, not a
table: biometric data, needed to link the videos of later runs too; delete the folder to forget them). When
the job ends, the driver clusters the persons of every complete video (average linkage at the same
``PERSON_DISTANCE``; two persons of one video stay apart) and writes ``OUT/job_persons/part-0.parquet``: one
row per person of a video, with its job-wide ``job_person_id``. Ids are numbered in order of first
appearance, videos taken in the order of their relative paths, so a rerun or a resumed job gives the same ids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.persons.identity import cluster_means

EMBEDDINGS_FOLDER = ".persons"
JOB_PERSONS = "job_persons"
JOB_PERSONS_SCHEMA = pa.schema([
    ("job_person_id", pa.int64()), ("video_id", pa.string()), ("video_path", pa.string()), ("person_id", pa.int64()),
    ("first_time", pa.float64()), ("time_on_screen_s", pa.float64()), ("frames", pa.int64()),
    ("dominant_emotion", pa.string()),
])


def embeddings_path(root: Path, video_id: str) -> Path:
    return root / EMBEDDINGS_FOLDER / f"{video_id}.json"


def embeddings_record(embeddings: dict[int, np.ndarray]) -> dict:
    """What a video's unit keeps for the linking: each person's mean embedding, JSON-ready."""
    return {"persons": {str(person): [float(x) for x in mean] for person, mean in sorted(embeddings.items())}}


def job_persons_table(videos: list[tuple[str, str, str, list[dict], dict]]) -> pa.Table:
    """One row per person of each video, with the job-wide person it is.

    Args:
        videos: (relative path, video id, video path, its ``persons`` rows, its ``embeddings_record``) of each
            complete video.
    """
    entries, means, groups = [], [], []
    for rank, (_, video_id, path, rows, record) in enumerate(sorted(videos, key=lambda video: video[0])):
        kept = record.get("persons", {})
        for row in sorted(rows, key=lambda r: (r["first_time"], r["person_id"])):
            if str(row["person_id"]) in kept:
                entries.append((video_id, path, row))
                means.append(np.asarray(kept[str(row["person_id"])], np.float64))
                groups.append(rank)
    if not entries:
        return JOB_PERSONS_SCHEMA.empty_table()
    groups = np.array(groups)
    ids = cluster_means(np.stack(means), groups[:, None] == groups[None, :], np.arange(len(entries), dtype=np.float64))
    return pa.Table.from_pylist([
        {"job_person_id": job_id, "video_id": video_id, "video_path": path, "person_id": row["person_id"],
         "first_time": row["first_time"], "time_on_screen_s": row["time_on_screen_s"], "frames": row["frames"],
         "dominant_emotion": row["dominant_emotion"]}
        for job_id, (video_id, path, row) in zip(ids, entries)], schema=JOB_PERSONS_SCHEMA)
