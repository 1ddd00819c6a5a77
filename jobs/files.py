"""Output files that appear whole and readable: written under a hidden name, given the umask's mode, renamed.

``tempfile.mkstemp`` creates files readable by their owner only (0600); results in a shared folder must
get the same mode as any file the user creates (``0666 & ~umask``), as the Parquet files do.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

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
