"""A job's published outputs, read where they are: a local folder or an object store (``s3://``, ``gs://``).

What ``emoray query`` and ``emoray report`` read: the manifests, and each table's published parts (hive
partitions ``<table>/video_id=<id>/*.parquet``; hidden files such as staged parts are never matched). An
object store is reached through pyarrow's filesystems, with the endpoint and credentials pyarrow and the AWS
SDKs take from the environment (``AWS_ENDPOINT_URL``, ...) or from the URI (``?endpoint_override=``).
"""

from __future__ import annotations

import json
import os
from pathlib import PurePosixPath

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from jobs import storage


class PublishedOutputs:
    """OUT as its readers see it."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = str(out)
        self.is_uri = storage.is_uri(self.out)
        if self.is_uri:
            self.filesystem, root = storage.resolve(self.out)
        else:
            self.filesystem, root = pafs.LocalFileSystem(), os.path.abspath(self.out)
        self.root = root.rstrip("/")

    def manifests(self) -> list[dict]:
        """Every readable manifest, in name order; anything that is not an emoray manifest is left out."""
        manifests = []
        for path in self._files("manifest", suffix=".json"):
            try:
                with self.filesystem.open_input_stream(path) as handle:
                    manifest = json.loads(handle.read())
            except (OSError, ValueError):
                continue
            if isinstance(manifest, dict) and manifest.get("video_id"):
                manifests.append(manifest)
        return manifests

    def parts(self, table: str, video_id: str | None = None) -> list[str]:
        """The published Parquet parts of ``table`` (of one video, or of all)."""
        folder = f"{table}/video_id={video_id}" if video_id else table
        return [path for path in self._files(folder, suffix=".parquet")
                if PurePosixPath(path).parent.name.startswith("video_id=")]

    def dataset(self, table: str) -> ds.Dataset | None:
        """``table`` as one hive-partitioned dataset (``video_id`` from the folder names), or None."""
        parts = self.parts(table)
        if not parts:
            return None
        return ds.dataset(parts, filesystem=self.filesystem, format="parquet", partitioning="hive",
                          partition_base_dir=f"{self.root}/{table}")

    def table(self, table: str, video_id: str, columns: list[str] | None = None) -> pa.Table | None:
        """One video's rows of ``table``, or None when it has no published part."""
        parts = self.parts(table, video_id)
        if not parts:
            return None
        return ds.dataset(parts, filesystem=self.filesystem, format="parquet").to_table(columns=columns)

    def job_table(self, name: str) -> pa.Table | None:
        """A table of the whole job (``OUT/<name>/part-0.parquet``, e.g. ``job_persons``), or None."""
        path = f"{self.root}/{name}/part-0.parquet"
        try:
            with self.filesystem.open_input_file(path) as handle:
                return pq.read_table(handle)
        except FileNotFoundError:
            return None
        except OSError as error:
            if self.filesystem.get_file_info(path).type == pafs.FileType.NotFound:
                return None
            raise storage.StorageError(f"{self.out}: cannot read {name}/ ({error})") from error

    def exists(self, location: str) -> bool:
        """Whether a file a manifest names (a path, or a URI in the store) is there."""
        if storage.is_uri(location):
            return storage.exists(location)
        return os.path.exists(location)

    def _files(self, folder: str, *, suffix: str) -> list[str]:
        selector = pafs.FileSelector(f"{self.root}/{folder}", recursive=True, allow_not_found=True)
        try:
            found = self.filesystem.get_file_info(selector)
        except OSError as error:
            raise storage.StorageError(f"{self.out}: cannot list {folder}/ ({error})") from error
        return sorted(info.path for info in found if info.type == pafs.FileType.File
                      and info.path.endswith(suffix) and not PurePosixPath(info.path).name.startswith("."))
