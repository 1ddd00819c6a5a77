"""Finding the inputs of a job and naming each one by its content."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from jobs import storage
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})  # one frame each
VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".wmv", ".flv", ".3gp",
    ".gif", ".ogv", ".mxf",
})
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | IMAGE_EXTENSIONS
LOCK_NAME = ".emoray.lock"  # in every output folder while and after a run writes it (jobs.lock)
JOB_FILE = "job.json"
_SAMPLES = 16
_SAMPLE_BYTES = 1 << 16
_FILE_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
               stat.S_IFBLK: "a block device", stat.S_IFDIR: "a directory"}


@dataclass
class Discovery:
    """What a job's input paths hold.

    ``inputs``: (path, relative path) pairs to process, sorted, each once; the relative path names the
    annotated video under OUT/annotated/. ``refused``: (path, reason) for inputs named on the command
    line that cannot be processed (missing, not a regular file, not a media type) and for folders
    that cannot be searched (no permission): they fail the job, the other inputs go on.
    ``skipped``: (path, reason) for files found in folders and left out (not regular files).
    ``output_folders``: emoray output folders found among the inputs and not descended into.
    """

    inputs: list[tuple[Path | str, Path]] = field(default_factory=list)
    refused: list[tuple[Path | str, str]] = field(default_factory=list)
    skipped: list[tuple[Path | str, str]] = field(default_factory=list)
    output_folders: list[Path] = field(default_factory=list)


def is_output_folder(folder: Path) -> bool:
    """True for a folder emoray writes results to: it holds the run lock or an emoray ``job.json``
    (False when the folder cannot be searched: listing it then says why)."""
    try:
        if (folder / LOCK_NAME).exists():
            return True
        return "spec" in json.loads((folder / JOB_FILE).read_text())
    except (OSError, ValueError, TypeError):
        return False


def media_type_error(name: str) -> str | None:
    """Why a file name is not taken as media (None when it is): the same rule for named and found files."""
    suffix = Path(name).suffix.lower()
    if suffix in MEDIA_EXTENSIONS:
        return None
    known = " ".join(sorted(MEDIA_EXTENSIONS))
    return f"not a video or image file name ({suffix or 'no extension'}; emoray reads {known})"


def _not_regular(path: Path) -> str | None:
    """Why ``path`` is not a regular file (a FIFO would block the reader forever); None when it is one
    or cannot be inspected (a dangling link fails later as unreadable)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    return f"not a regular file ({_FILE_KINDS.get(stat.S_IFMT(mode), 'a special file')})"


def _unreachable(path: Path) -> str | None:
    """Why ``path`` cannot even be looked at (None when it can): missing, or a folder above it unsearchable."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return "no such file or directory"
    except OSError as error:
        return f"cannot reach it ({error.strerror or error})"
    return None


def _is_dir(path: Path) -> bool:
    """Whether ``path`` is a folder (False when it cannot be inspected: it then fails as unreadable)."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def _matches(relative: Path | str, glob: str | None) -> bool:
    name = Path(relative).name
    return glob is None or fnmatch.fnmatch(str(relative), glob) or fnmatch.fnmatch(name, glob)


def discover(paths: list[str | Path], *, glob: str | None = None, output: str | Path | None = None) -> Discovery:
    """The files to process: each file given, and every media file under each directory given (recursive).

    Files named and files found follow one rule: known video and image extensions only (hidden
    names are left out of folders). Non-regular files (FIFOs, sockets, devices) are never opened.
    Discovery does not descend into ``output`` nor into any other emoray output folder (one that holds
    the run lock or an emoray ``job.json``), so results are never taken as new inputs. ``glob``
    filters on the path relative to the directory given (or on the file name) with shell wildcards.
    Object-store URIs (``s3://bucket/prefix``) are listed the same way and stay URIs (str); objects
    under the ``output`` URI are left out.
    """
    found = Discovery()
    inputs: dict[Path | str, Path] = {}
    out_uri = str(output).rstrip("/") + "/" if output is not None and storage.is_uri(output) else None
    out_dir = Path(output).absolute() if output is not None and out_uri is None else None
    for text in map(str, paths):
        if storage.is_uri(text):
            if not storage.exists(text):
                found.refused.append((text, f"{text}: no such file or directory"))
                continue
            for uri, relative in storage.list_media(text, MEDIA_EXTENSIONS, glob=glob):
                reason = media_type_error(uri)
                if reason and uri.rstrip("/") == text.rstrip("/"):
                    found.refused.append((uri, f"{uri}: {reason}"))
                elif not reason and not (out_uri and uri.startswith(out_uri)):
                    inputs.setdefault(uri, relative)
            continue
        given = Path(text)
        unreachable = _unreachable(given)
        if unreachable:
            found.refused.append((given, f"{given}: {unreachable}"))
        elif _is_dir(given):
            _walk(given, glob, out_dir, found, inputs)
        elif _matches(given.name, glob):
            reason = _not_regular(given) or media_type_error(given.name)
            if reason:
                found.refused.append((given, f"{given}: {reason}"))
            else:
                inputs.setdefault(given.absolute(), Path(given.name))
    found.inputs = sorted(inputs.items(), key=lambda item: (isinstance(item[0], str), item[0]))  # paths, then URIs
    return found


def _walk(given: Path, glob: str | None, out_dir: Path | None, found: Discovery, inputs: dict) -> None:
    """Media files under the folder ``given``, leaving out output folders and non-regular files."""
    def is_output(folder: Path) -> bool:
        if (out_dir is not None and folder.absolute() == out_dir) or is_output_folder(folder):
            found.output_folders.append(folder)
            return True
        return False

    def unsearchable(error: OSError) -> None:
        folder = Path(error.filename or given)
        found.refused.append((folder, f"{folder}: cannot search this folder ({error.strerror or error})"))

    if is_output(given):
        return
    for root, dirs, files in os.walk(given, onerror=unsearchable):
        dirs[:] = sorted(d for d in dirs if not is_output(Path(root, d)))
        for name in sorted(files):
            path = Path(root, name)
            relative = path.relative_to(given)
            if name.startswith(".") or media_type_error(name) or not _matches(relative, glob):
                continue
            reason = _not_regular(path)
            if reason:
                found.skipped.append((path, f"{path}: {reason}"))
            else:
                inputs.setdefault(path.absolute(), relative)


def video_id(path: str | Path) -> str:
    """A stable id for the file's content (20 hex digits), whatever its name or location.

    Hashes the size and 16 evenly spaced 64 KiB samples rather than every byte, so that multi-GB
    recordings are named in milliseconds; two different recordings agreeing on all samples and
    the size are not a practical concern for video.
    """
    digest = hashlib.blake2b(digest_size=10)
    with storage.open_any(path) as handle:
        size = handle.seek(0, os.SEEK_END)
        digest.update(size.to_bytes(8, "little"))
        positions = {0} if size <= _SAMPLES * _SAMPLE_BYTES else {
            i * (size - _SAMPLE_BYTES) // (_SAMPLES - 1) for i in range(_SAMPLES)
        }
        for position in sorted(positions):
            handle.seek(position)
            digest.update(handle.read(_SAMPLE_BYTES if len(positions) > 1 else size))
    return digest.hexdigest()
