"""A job's OUT, on a local disk or in an object store, resolved once: where files are staged, how they are
published, where manifests are read and written.

A local OUT is written in place (staged under ``OUT/.staging/``, renamed into its partitions). An
object-store OUT (``s3://...``) is staged in a local folder of the process that writes, and each file is
uploaded whole when its video is published, the manifest last. Each process that writes builds its own
``JobOutput`` from the same OUT string.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from jobs import storage
from jobs.files import move_into_place
from jobs.manifest import manifest_path, read_manifest, write_json_atomic
from pipeline.errors import OutputError
from pipeline.sinks.parquet import PART_NAME, STAGING, TABLES, partition_dir, remove_published


def check_output_writable(out: str | Path) -> None:
    """Fail before any work when OUT (a folder, or an object-store URI) cannot be created or written, nor
    the hidden ``OUT/.staging`` where a run writes its files first, when it is there already."""
    if storage.is_uri(out):
        try:
            return storage.check_writable(str(out))
        except storage.StorageError as error:
            raise OutputError(str(error)) from error
    out = Path(out)
    for folder in (out, out / STAGING):
        if folder != out and not os.path.lexists(folder):
            continue  # made by the run, in OUT
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
                pass
        except OSError as error:
            raise OutputError(f"{folder}: output directory is not writable ({error.strerror or error})") from error


class JobOutput:
    """OUT as one process of the job sees it.

    Attributes:
        root: the local folder files are written under: OUT itself, or a staging folder for a store.
        is_local: OUT is a folder on this machine's disk (so only this node may write it).
    """

    def __init__(self, output: str | os.PathLike) -> None:
        self.output = str(output)
        self.store = storage.OutputStore(self.output) if storage.is_uri(self.output) else None
        self.root = self.store.staging if self.store else Path(self.output)
        self.is_local = self.store is None

    def final(self, path: Path) -> str:
        """Where a file under ``root`` ends up: the path itself, or its URI in the store."""
        return self.store.uri_of(path) if self.store else str(path)

    def exists(self, final: str) -> bool:
        return storage.exists(final) if self.store else os.path.exists(final)

    def publish(self, staged: dict[str, str]) -> dict[str, str]:
        """Files already in place under ``root``: uploaded to the store (each whole), or kept; their final places."""
        if not self.store:
            return dict(staged)
        return {name: self.store.publish(path) for name, path in staged.items()}

    def unpublish(self, video_id: str) -> None:
        """Remove a video's published rows (a failed rerun must not leave older rows visible)."""
        if not self.store:
            return remove_published(self.root, video_id)
        for table in TABLES:
            storage.delete(self.final(partition_dir(self.root, table, video_id) / PART_NAME))

    def read_manifest(self, video_id: str) -> dict | None:
        if self.store:
            return self.store.read_json(manifest_path(self.root, video_id))
        return read_manifest(self.root, video_id)

    def write_manifest(self, video_id: str, payload: dict) -> None:
        self.write_json(manifest_path(self.root, video_id), payload)

    def write_json(self, path: Path, payload: dict) -> None:
        if self.store:
            self.store.write_json(path, payload)
        else:
            write_json_atomic(path, payload)

    def read_json(self, path: Path) -> dict | None:
        """The JSON object at ``path`` under ``root`` (in the store for a store); None if absent or unreadable."""
        if self.store:
            return self.store.read_json(path)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def write_table(self, path: Path, table: pa.Table) -> str:
        """Write a Parquet file at ``path`` under ``root`` whole (hidden name, then renamed; a store: uploaded)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        pq.write_table(table, temporary)
        if self.store:
            final = storage.upload(temporary, self.final(path))
            temporary.unlink()
            return final
        move_into_place(temporary, path)
        return str(path)

    def close(self) -> None:
        if self.store:
            self.store.close()
