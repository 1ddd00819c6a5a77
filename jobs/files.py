"""Output files that appear whole and readable: written under a hidden name, given the umask's mode, renamed.

``tempfile.mkstemp`` creates files readable by their owner only (0600); results in a shared folder must
get the same mode as any file the user creates (``0666 & ~umask``), as the Parquet files do.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

NAME_MAX = 255  # bytes in a file name: ext4, xfs, btrfs, zfs, tmpfs; what os.pathconf says where it can be asked
TEMPORARY_EXTRA = len(".") + len(".") + 8 + len(".part")  # a hidden temporary name: .NAME.xxxxxxxx.part
_lock = threading.Lock()


def umask_mode() -> int:
    """The mode a new file gets from the process umask (0644 under the usual 022)."""
    with _lock:  # the umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def move_into_place(temporary: str | Path, final: str | Path) -> None:
    """Give ``temporary`` the umask's mode and rename it to ``final`` (atomic on one filesystem)."""
    os.chmod(temporary, umask_mode())
    os.replace(temporary, final)


def name_max(folder: str | Path) -> int:
    """The longest file name (bytes) the filesystem of ``folder`` (or of its nearest existing parent) takes."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return NAME_MAX


def fitting_name(name: str, tag: str, *, limit: int = NAME_MAX) -> str:
    """``name``, or when it and its hidden temporary name (``TEMPORARY_EXTRA`` more) would not fit ``limit``
    bytes, its stem cut on a character boundary, ``~tag`` and its suffix: ``tag`` (a content id) keeps
    two names cut alike apart. Any legal input name thus gives an output name that can be written."""
    room = limit - TEMPORARY_EXTRA
    if len(name.encode()) <= room:
        return name
    suffix = Path(name).suffix if len(Path(name).suffix.encode()) <= 16 else ""
    stem = name[: len(name) - len(suffix)] if suffix else name
    end = f"~{tag}{suffix}"
    return stem.encode()[: room - len(end.encode())].decode(errors="ignore") + end


def temporary_prefix(name: str, *, limit: int = NAME_MAX) -> str:
    """``.NAME.``, the prefix of a hidden temporary file beside ``name``, cut so that the whole temporary
    name (8 random characters and a suffix of up to 5 added) fits ``limit`` bytes."""
    return "." + name.encode()[: limit - TEMPORARY_EXTRA].decode(errors="ignore") + "."
