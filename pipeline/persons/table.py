"""The ``persons`` table: one row per person of a video, made from its ``tracks`` rows and each track's person.

A person's time on screen is the sum of its tracks' spans (tracks of one person never overlap in time);
its emotion shares are its tracks' shares weighed by their frames, so they are the shares over all of its
faces; its best face is the best face of its track whose best box is largest.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

BOX = ("x1", "y1", "x2", "y2")


def persons_schema(labels: list[str]) -> pa.Schema:
    return pa.schema([
        ("person_id", pa.int64()), ("tracks", pa.list_(pa.int64())), ("first_time", pa.float64()),
        ("last_time", pa.float64()), ("time_on_screen_s", pa.float64()), ("frames", pa.int64()),
        ("dominant_emotion", pa.string()), *[(f"share_{label}", pa.float32()) for label in labels],
        ("best_track", pa.int64()), ("best_frame", pa.int64()), *[(f"best_{name}", pa.float32()) for name in BOX],
    ])


def persons_table(tracks: pa.Table, person_of_track: dict[int, int | None], labels: list[str]) -> pa.Table:
    """One row per person, by person_id, from a video's ``tracks`` table (``pipeline.timeline.TimelineTotals``).

    Args:
        tracks: the video's tracks rows.
        person_of_track: each track id's person (None or absent: no person; left out).
        labels: the emotion labels, in the classifier's order.
    """
    columns = {name: tracks.column(name).to_numpy(zero_copy_only=False)
               for name in ("track_id", "start_time", "end_time", "frames", "best_frame", *(f"best_{b}" for b in BOX))}
    shares = np.stack([tracks.column(f"share_{label}").to_numpy(zero_copy_only=False) for label in labels], axis=1)
    person = np.array([person_of_track.get(int(track)) for track in columns["track_id"]], dtype=object)
    rows = []
    for person_id in sorted({p for p in person if p is not None}):
        members = np.flatnonzero(person == person_id)
        members = members[np.argsort(columns["start_time"][members], kind="stable")]
        frames = columns["frames"][members].astype(np.float64)
        share = (shares[members] * frames[:, None]).sum(axis=0) / frames.sum()
        area = ((columns["best_x2"][members] - columns["best_x1"][members])
                * (columns["best_y2"][members] - columns["best_y1"][members]))
        best = members[int(np.argmax(area))]
        rows.append({
            "person_id": int(person_id), "tracks": [int(track) for track in columns["track_id"][members]],
            "first_time": float(columns["start_time"][members].min()), "last_time": float(columns["end_time"][members].max()),
            "time_on_screen_s": float((columns["end_time"][members] - columns["start_time"][members]).sum()),
            "frames": int(frames.sum()), "dominant_emotion": labels[int(np.argmax(share))],
            **{f"share_{label}": float(value) for label, value in zip(labels, share)},
            "best_track": int(columns["track_id"][best]), "best_frame": int(columns["best_frame"][best]),
            **{f"best_{name}": float(columns[f"best_{name}"][best]) for name in BOX},
        })
    return pa.Table.from_pylist(rows, schema=persons_schema(labels))


def person_embeddings(appearances: list, person_of_track: dict[int, int | None]) -> dict[int, np.ndarray]:
    """Each person's mean face embedding: the mean of every embedded sample of its tracks."""
    samples: dict[int, list[np.ndarray]] = {}
    for appearance in appearances:
        person = person_of_track.get(appearance.track_id)
        if person is not None and len(appearance.embeddings):
            samples.setdefault(person, []).append(appearance.embeddings)
    return {person: np.concatenate(parts).mean(axis=0).astype(np.float32) for person, parts in samples.items()}


def with_embeddings(persons: pa.Table, embeddings: dict[int, np.ndarray]) -> pa.Table:
    """``persons`` with an ``embedding`` column (list of float32): biometric data, written only when asked."""
    column = [embeddings[p].tolist() if p in embeddings else None for p in persons.column("person_id").to_pylist()]
    return persons.append_column("embedding", pa.array(column, pa.list_(pa.float32())))
