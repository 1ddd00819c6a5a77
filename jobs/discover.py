"""Finding the inputs of a job and naming each one by its content."""

from __future__ import annotations

import fnmatch
import hashlib
import os
from pathlib import Path

from jobs import storage
from pipeline.sources.file import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | IMAGE_EXTENSIONS
_SAMPLES = 16
_SAMPLE_BYTES = 1 << 16


def discover(paths: list[str | Path], *, glob: str | None = None) -> list[tuple[Path | str, Path]]:
    """Files to process: each file given, and every media file under each directory given (recursive).

    Files named explicitly are taken whatever their extension (a wrong one fails later with a
    clear error); in directories only known video and image extensions count. ``glob`` filters on
    the path relative to the directory given (or on the file name) with shell wildcards. Object-store
    URIs (``s3://bucket/prefix``) are listed the same way and stay URIs (str).

    Returns:
        (path, relative path) pairs, sorted and without duplicates; the relative path names the
        annotated video under OUT/annotated/.
    """
    found: dict[Path | str, Path] = {}
    for text in map(str, paths):
        if storage.is_uri(text):
            for uri, relative in storage.list_media(text, MEDIA_EXTENSIONS, glob=glob):
                found.setdefault(uri, relative)
            continue
        given = Path(text)
        if given.is_dir():
            for root, dirs, files in os.walk(given):
                dirs.sort()
                for name in sorted(files):
                    path = Path(root, name)
                    relative = path.relative_to(given)
                    if path.suffix.lower() in MEDIA_EXTENSIONS and not name.startswith("."):
                        if glob is None or fnmatch.fnmatch(str(relative), glob) or fnmatch.fnmatch(name, glob):
                            found.setdefault(path.absolute(), relative)
        elif os.path.lexists(given) and (glob is None or fnmatch.fnmatch(given.name, glob)):
            found.setdefault(given.absolute(), Path(given.name))
    return sorted(found.items(), key=lambda item: (isinstance(item[0], str), item[0]))  # paths, then URIs


def missing_inputs(paths: list[str | Path]) -> list[Path | str]:
    """Inputs given on the command line that do not exist at all (not even as a dangling link)."""
    return [p if storage.is_uri(p) else Path(p) for p in map(str, paths)
            if not (storage.exists(p) if storage.is_uri(p) else os.path.lexists(p))]


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
