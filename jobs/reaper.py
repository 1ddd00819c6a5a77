"""Ends an embedded Ray's processes when the driver that started it dies, even by SIGKILL.

Ray ties its GCS and raylet to the driver, but the agents and workers they start outlive a killed
driver for a minute or more (still listening, ~200 MB). This watchdog is started by the driver with
a pipe on its stdin; it records the driver's descendants every half second, and when the pipe
closes (the driver exited, however) it ends those still running. Standard library and psutil only.

Run as ``python -m jobs.reaper DRIVER_PID``.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys

import psutil

POLL_SECONDS = 0.5
GRACE_SECONDS = 2.0


def start_reaper() -> subprocess.Popen:
    """Start the watchdog for this process; it lives until this process is gone, then cleans up."""
    return subprocess.Popen([sys.executable, "-m", "jobs.reaper", str(os.getpid())], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _descendants(driver: psutil.Process) -> dict[int, psutil.Process]:
    try:
        return {child.pid: child for child in driver.children(recursive=True) if child.pid != os.getpid()}
    except psutil.Error:
        return {}


def watch(driver_pid: int) -> None:
    """Until stdin closes, remember the driver's descendants; then terminate them, and kill the stubborn."""
    driver = psutil.Process(driver_pid)
    known: dict[int, psutil.Process] = {}
    while True:
        known.update(_descendants(driver))
        readable, _, _ = select.select([sys.stdin], [], [], POLL_SECONDS)
        if readable and not os.read(sys.stdin.fileno(), 4096):
            break
    alive = []
    for process in known.values():
        try:
            if process.is_running():  # also checks the pid was not reused since
                process.terminate()
                alive.append(process)
        except psutil.Error:
            pass
    _, stubborn = psutil.wait_procs(alive, timeout=GRACE_SECONDS)
    for process in stubborn:
        try:
            process.kill()
        except psutil.Error:
            pass


if __name__ == "__main__":
    watch(int(sys.argv[1]))
