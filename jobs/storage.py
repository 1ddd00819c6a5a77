"""Inputs and outputs given as object-store URIs (``s3://``, ``gs://``, ``file://``, ...), via pyarrow filesystems.

Inputs: listed and content-hashed where they are (ranged reads); each node that decodes a video
downloads it once into ``$EMORAY_HOME/cache/inputs`` for PyAV, which seeks in local files (the
least recently used copies are deleted beyond ``$EMORAY_INPUT_CACHE_GB``, default 50).
Outputs: written on the driver's node into a staging folder, then each video's files are uploaded
and its manifest last, so what is in the store is complete or absent, as on a local disk.
Credentials come from the environment, as pyarrow reads them (``AWS_*``, instance roles,
``GOOGLE_APPLICATION_CREDENTIALS``); query parameters such as ``?endpoint_override=`` pass through.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import functools
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator
from urllib.parse import urlsplit

from models.errors import EmorayError

_COPY_CHUNK = 8 << 20


class StorageError(EmorayError, OSError):
    """An object-store URI cannot be opened, listed, read or written."""


def is_uri(path: str | os.PathLike) -> bool:
    """True for ``scheme://...`` (s3, gs, file, ...); plain paths, absolute or relative, are not URIs."""
    text = str(path)
    scheme = urlsplit(text).scheme
    return "://" in text and len(scheme) > 1 and scheme.replace("+", "").isalnum()


def _split(uri: str) -> tuple[str, str]:
    """(the URI without its query, the query) so that child URIs keep ``?endpoint_override=...``."""
    base, _, query = uri.partition("?")
    return base, query


def join(uri: str, relative: str) -> str:
    """The URI of ``relative`` (a POSIX path) under the folder ``uri``."""
    base, query = _split(uri)
    return f"{base.rstrip('/')}/{relative.lstrip('/')}" + (f"?{query}" if query else "")


def resolve(uri: str):
    """(pyarrow FileSystem, path inside it) for a URI."""
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as error:  # unknown scheme, missing credentials, bad query
        raise StorageError(f"{uri}: cannot open this storage ({error})") from error


def exists(uri: str) -> bool:
    import pyarrow.fs as pafs

    filesystem, path = resolve(uri)
    try:
        return filesystem.get_file_info(path).type != pafs.FileType.NotFound
    except OSError as error:
        raise StorageError(f"{uri}: cannot look it up ({error})") from error


def size(uri: str) -> int | None:
    """The object's size in bytes; None when there is no such object."""
    import pyarrow.fs as pafs

    filesystem, path = resolve(uri)
    try:
        info = filesystem.get_file_info(path)
    except OSError as error:
        raise StorageError(f"{uri}: cannot look it up ({error})") from error
    return info.size if info.type == pafs.FileType.File else None


def list_media(uri: str, extensions: frozenset[str], *, glob: str | None = None) -> list[tuple[str, Path]]:
    """Files to process under a URI, as ``jobs.discover.discover`` finds them on disk.

    A folder (prefix) gives every file below it with a media extension (hidden names left out); a
    single object is taken whatever its extension. ``glob`` filters on the relative path or name.

    Returns:
        (URI, relative path) pairs; a missing URI gives none.
    """
    import pyarrow.fs as pafs

    filesystem, root = resolve(uri)
    try:
        info = filesystem.get_file_info(root)
        if info.type == pafs.FileType.File:
            name = PurePosixPath(root).name
            return [(uri, Path(name))] if glob is None or fnmatch.fnmatch(name, glob) else []
        if info.type != pafs.FileType.Directory:
            return []
        found = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    except OSError as error:
        raise StorageError(f"{uri}: cannot list it ({error})") from error
    files = []
    for entry in found:
        relative = PurePosixPath(entry.path[len(root.rstrip("/")):].lstrip("/"))
        if entry.type != pafs.FileType.File or relative.name.startswith("."):
            continue
        if relative.suffix.lower() in extensions and (
                glob is None or fnmatch.fnmatch(str(relative), glob) or fnmatch.fnmatch(relative.name, glob)):
            files.append((join(uri, str(relative)), Path(relative)))
    return sorted(files)


@contextlib.contextmanager
def open_input(uri: str) -> Iterator:
    """A random-access file (``read``, ``seek``, ``size()``) on the object."""
    filesystem, path = resolve(uri)
    try:
        handle = filesystem.open_input_file(path)
    except OSError as error:
        raise StorageError(f"{uri}: cannot read ({error})") from error
    with handle:
        yield handle


def cache_dir() -> Path:
    from models.registry import home

    return home() / "cache" / "inputs"


def cache_limit_bytes() -> int:
    """The input cache's size cap on each node: ``$EMORAY_INPUT_CACHE_GB`` (default 50)."""
    return int(float(os.environ.get("EMORAY_INPUT_CACHE_GB", "50")) * 1e9)


def local_copy(uri: str, *, directory: Path | None = None, limit_bytes: int | None = None) -> Path:
    """A copy of the object on this node's disk, downloaded once (by size and mtime) and shared by the
    tasks of this node; a download in progress elsewhere on the node is waited for, not repeated.

    The cache keeps the most recently used copies within ``limit_bytes`` (default
    ``cache_limit_bytes()``): older ones are deleted after a download.
    """
    import pyarrow.fs as pafs

    filesystem, path = resolve(uri)
    try:
        info = filesystem.get_file_info(path)
    except OSError as error:
        raise StorageError(f"{uri}: cannot look it up ({error})") from error
    if info.type != pafs.FileType.File:
        raise StorageError(f"{uri}: no such object")
    key = hashlib.sha256(f"{uri}\0{info.size}\0{info.mtime_ns}".encode()).hexdigest()[:24]
    directory = directory or cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{key}{PurePosixPath(path).suffix.lower()}"
    with open(directory / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists() and target.stat().st_size == info.size:
            os.utime(target)  # most recently used
            return target
        with tempfile.NamedTemporaryFile(dir=directory, prefix=f".{key}.", suffix=".tmp", delete=False) as handle:
            temporary = Path(handle.name)
            try:
                with filesystem.open_input_stream(path) as source:
                    shutil.copyfileobj(source, handle, _COPY_CHUNK)
            except OSError as error:
                temporary.unlink(missing_ok=True)
                raise StorageError(f"{uri}: download failed ({error})") from error
        os.replace(temporary, target)
    _evict(directory, keep=target, limit_bytes=cache_limit_bytes() if limit_bytes is None else limit_bytes)
    return target


def _evict(directory: Path, *, keep: Path, limit_bytes: int) -> None:
    """Delete the least recently used copies until the cache fits (a copy being decoded stays
    readable: its open file outlives the name)."""
    copies = []
    for path in directory.iterdir():
        with contextlib.suppress(FileNotFoundError):
            if not path.name.startswith("."):
                stat = path.stat()
                copies.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in copies)
    for _, size, path in sorted(copies):
        if total <= limit_bytes:
            break
        if path != keep:
            path.unlink(missing_ok=True)
            total -= size


def check_writable(uri: str) -> None:
    """Create the output location if needed and write (then delete) a probe object there."""
    filesystem, root = resolve(uri)
    probe = f"{root.rstrip('/')}/.write-test-{uuid.uuid4().hex}"
    try:
        filesystem.create_dir(root, recursive=True)
        with filesystem.open_output_stream(probe) as handle:
            handle.write(b"")
        filesystem.delete_file(probe)
    except OSError as error:
        raise StorageError(f"{uri}: output location is not writable ({error})") from error


def write_object(uri: str, write: Callable[[object], object]) -> None:
    """Write whole or not at all: ``write(handle)`` fills the object, which appears on close (object
    stores); on a local filesystem it is written under a hidden name, then renamed."""
    filesystem, path = resolve(uri)
    parent, name = str(PurePosixPath(path).parent), PurePosixPath(path).name
    temporary = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    atomic_put = filesystem.type_name != "local"
    try:
        if not atomic_put:  # an object store has no folders (a marker object for one would be left behind)
            filesystem.create_dir(parent, recursive=True)
        with filesystem.open_output_stream(path if atomic_put else temporary) as handle:
            write(handle)
        if not atomic_put:
            filesystem.move(temporary, path)
    except OSError as error:
        raise StorageError(f"{uri}: upload failed ({error})") from error


def upload(local: str | Path, uri: str) -> str:
    """Copy a local file to ``uri``; returns the URI."""
    def copy(handle) -> None:
        with open(local, "rb") as source:
            shutil.copyfileobj(source, handle, _COPY_CHUNK)

    write_object(uri, copy)
    return uri


def delete(uri: str) -> None:
    """Remove an object; one already absent is no error."""
    filesystem, path = resolve(uri)
    try:
        filesystem.delete_file(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        raise StorageError(f"{uri}: cannot delete it ({error})") from error


@contextlib.contextmanager
def local_output(destination: str | Path) -> Iterator[Path]:
    """A local path to write ``destination`` to: itself, or for a URI a temporary file uploaded on success."""
    if not is_uri(destination):
        yield Path(destination)
        return
    directory = Path(tempfile.mkdtemp(prefix="emoray-out-"))
    try:
        local = directory / PurePosixPath(_split(str(destination))[0]).name
        yield local
        upload(local, str(destination))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def open_any(path: str | Path) -> Iterator:
    """A readable binary file on a local path or a URI."""
    if is_uri(path):
        with open_input(str(path)) as handle:
            yield handle
    else:
        with open(path, "rb") as handle:
            yield handle


def with_local_input(function: Callable) -> Callable:
    """Decorator for tasks that decode a file: a URI first argument becomes this node's cached copy,
    and an emoray error about the copy names the URI instead."""
    @functools.wraps(function)
    def wrapper(path, *args, **kwargs):
        if not is_uri(path):
            return function(path, *args, **kwargs)
        local = str(local_copy(path))
        try:
            return function(local, *args, **kwargs)
        except EmorayError as error:
            raise type(error)(str(error).replace(local, path)) from error

    return wrapper


class OutputStore:
    """The output folder of a job when it is a URI: a local staging folder for the files being
    written, uploads into the store, and reads of what a previous run left there."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.staging = Path(tempfile.mkdtemp(prefix="emoray-staging-"))

    def uri_of(self, local: str | Path) -> str:
        """Where a file of the staging folder goes in the store."""
        return join(self.uri, Path(local).relative_to(self.staging).as_posix())

    def publish(self, local: str | Path) -> str:
        """Upload a staged file to its place in the store, then drop the local copy; returns its URI."""
        uri = upload(local, self.uri_of(local))
        Path(local).unlink()
        return uri

    def write_json(self, local: str | Path, payload: dict) -> str:
        """Write JSON to the store where the staging path ``local`` would go."""
        data = json.dumps(payload, indent=2, default=str).encode()
        uri = self.uri_of(local)
        write_object(uri, lambda handle: handle.write(data))
        return uri

    def read_json(self, local: str | Path) -> dict | None:
        """The JSON object in the store at the place of staging path ``local``; None if absent or unreadable."""
        try:
            with open_input(self.uri_of(local)) as handle:
                return json.loads(handle.read())
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
