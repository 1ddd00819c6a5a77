"""The live bench's RTSP camera on 127.0.0.1 (the live tests use it too): GStreamer's RTSP server looping a file.

GStreamer's Python bindings come from Debian (``make system-deps``), so the server
(``gst_camera.py``) runs under the system interpreter as a child process in its own process
group; this module starts it, waits for its ``READY <url>`` line, and stops it by that group.
The stream is camera-like: one shared live stream for all clients, the clip looped forever at its
frame rate, a client joins at the live position and its first frame is the next keyframe.
"""

from __future__ import annotations

import functools
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPT = Path(__file__).with_name("gst_camera.py")
READY_TIMEOUT_S = 20.0  # a started server prints READY within about a second; a busy machine may take longer

_CHECK_GSTREAMER = """
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in ("qtdemux", "h264parse", "rtph264pay", "appsrc", "appsink") if not Gst.ElementFactory.find(e)]
assert not missing, "GStreamer elements missing: " + " ".join(missing)
"""


@functools.lru_cache(maxsize=None)
def rtsp_server_missing() -> str | None:
    """Why the local RTSP camera cannot run here, or None when it can."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} is absent: the local RTSP camera needs the system interpreter's PyGObject"
    check = subprocess.run([SYSTEM_PYTHON, "-c", _CHECK_GSTREAMER], capture_output=True, text=True)
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["failed"])[-1]
        return f"GStreamer's RTSP server is not usable from {SYSTEM_PYTHON} ({last}); `make system-deps` installs it"
    return None


class RtspServer:
    """``gst_camera.py`` serving ``video`` at ``rtsp://127.0.0.1:PORT/stream`` as a child process.

    The first ``start()`` binds a free port; later starts reuse that port, so a client's URL stays valid
    across an outage. The server runs in its own process group and is stopped by it.
    Its stderr goes to ``self.log_path`` (shown in errors).
    """

    def __init__(self, video: str | os.PathLike):
        self.video = Path(video)
        self.port = 0  # any free port until the first start() binds one
        self.url: str | None = None
        self.process: subprocess.Popen | None = None
        self._log_dir = Path(tempfile.mkdtemp(prefix="rtsp-server-"))
        self.log_path = self._log_dir / "server.log"

    # -- life cycle ----------------------------------------------------------------------------------
    def start(self) -> str:
        """Starts the server and returns its URL once it accepts clients (raises RuntimeError if not)."""
        if self.running:
            return self.url
        missing = rtsp_server_missing()
        if missing:
            raise RuntimeError(missing)
        command = [SYSTEM_PYTHON, str(SCRIPT), str(self.video), "--port", str(self.port)]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        line = self._read_ready_line()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"the RTSP server for {self.video} did not start ({line or 'no READY line'}):\n"
                               f"{self.log()}")
        self.url = line.split()[1]
        self.port = int(self.url.split(":")[2].split("/")[0])
        return self.url

    def _read_ready_line(self) -> str:
        deadline = time.monotonic() + READY_TIMEOUT_S
        data = b""
        fd = self.process.stdout.fileno()
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                return f"no READY line within {READY_TIMEOUT_S:.0f} s"
            readable, _, _ = select.select([fd], [], [], min(left, 0.2))
            if readable:
                chunk = os.read(fd, 4096)
                if not chunk:  # the server exited
                    return f"exit status {self.process.wait()}"
                data += chunk
        return data.split(b"\n", 1)[0].decode(errors="replace").strip()

    def stop(self, timeout: float = 5.0) -> None:
        """Stops the server (SIGTERM to its process group; SIGKILL after ``timeout``) and waits for it."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            self._signal(process, signal.SIGCONT)  # a frozen server cannot handle SIGTERM
            self._signal(process, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(process, signal.SIGKILL)
                process.wait()
        process.stdout.close()

    @staticmethod
    def _signal(process: subprocess.Popen | None, signum: int) -> None:
        if process is None:
            return
        try:
            os.killpg(process.pid, signum)  # the server's own group (start_new_session): nothing else
        except ProcessLookupError:
            pass

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """What the server wrote to stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._log_dir, ignore_errors=True)

    def __enter__(self) -> "RtspServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RtspServer({str(self.video)!r}, url={self.url!r}, running={self.running})"
