"""One writer per output folder: an advisory lock held for the whole run.

Two runs writing one folder would rename each other's files away and mix their manifests; the
second run exits at once instead, naming the first. The lock is ``flock`` on ``OUT/.emoray.lock``:
the kernel releases it when the holder exits in any way (even SIGKILL), so no stale lock remains.
Object-store outputs have no such lock (see the README).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from typing import Iterator

from jobs import storage
from jobs.discover import LOCK_NAME
from jobs.files import umask_mode
from models.errors import EmorayError

_held: dict[str, list[int]] = {}  # realpath of the lock file -> [fd, depth]: the lock is re-entrant in one process


class OutputLockedError(EmorayError, RuntimeError):
    """Another emoray run is writing the same output folder."""


@contextlib.contextmanager
def output_lock(out: str | Path) -> Iterator[None]:
    """Hold the output folder's lock (created with OUT if needed) until the block ends.

    Raises:
        OutputLockedError: at once, naming the folder and the other run's pid, when it is held.
    """
    if storage.is_uri(out):
        yield
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(Path(out) / LOCK_NAME)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    fd = os.open(key, os.O_RDWR | os.O_CREAT, umask_mode())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise OutputLockedError(f"another emoray run is writing {out} (pid {holder})") from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[key] = [fd, 1]
    try:
        yield
    finally:
        del _held[key]
        os.close(fd)  # releases the lock; the file stays, marking OUT as an output folder
