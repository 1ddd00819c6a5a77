"""Fixtures for live-mode tests: a real RTSP camera on 127.0.0.1 and a real headless browser.

RTSP camera (``FaultyCamera``: ``pipeline/bench/camera.py`` running ``pipeline/bench/gst_camera.py``, GStreamer's RTSP server under the system ``/usr/bin/python3``):

    def test_something(rtsp_server_factory):
        server = rtsp_server_factory(shared("videos/WolfgangLanger_Pexels.mp4"))  # started
        with av.open(server.url, options=PYAV_RTSP_OPTIONS) as container: ...
        server.restart()              # same port, same URL: a camera that rebooted
        server.freeze() / server.thaw()   # SIGSTOP/SIGCONT: a camera that hangs with the socket open
        server.stop()                 # SIGTERM to its process group, then wait (SIGKILL after 5 s)

or ``with RtspServer(video) as server:`` (stopped on leaving the block). Everything a factory started is
stopped at teardown. The stream is camera-like: one shared live stream for all clients, the clip looped
forever at its frame rate, a client joins at the live position and its first frame is the next keyframe.

Browser: ``render_page(url) -> (dom_html, screenshot_png_path)`` runs Debian's Chromium headless.

Both skip with the reason when what they need is absent (``make system-deps`` installs it; the clips
come from ../shared/data).
"""

from __future__ import annotations

import os
import signal
from fractions import Fraction
from pathlib import Path

import pytest

from pipeline.bench.camera import RtspServer, rtsp_server_missing
from tests.conftest import shared

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# What a PyAV client of the test camera should pass (FFmpeg 8): TCP interleaving, a 5 s socket timeout in
# microseconds (without it a frozen camera blocks forever) and a tiny probe (first frame ~0.05 s after
# the first keyframe instead of ~0.9 s).
PYAV_RTSP_OPTIONS = {"rtsp_transport": "tcp", "timeout": "5000000", "probesize": "32"}

# Shared clips that the server serves (H.264 starting with an IDR frame), with what a client decodes.
# Not served: face_noface.mov (HEVC) and no_face.mp4 (its only I-frame is not an IDR frame: FFmpeg
# decodes nothing from it over RTSP; the server refuses it with that reason).
RTSP_CLIPS = {
    "videos/WolfgangLanger_Pexels.mp4": {"size": (640, 360), "fps": 24000 / 1001, "keyframe_every_s": 3.0},
    "videos/single_face.mp4": {"size": (640, 360), "fps": 30.0, "keyframe_every_s": 2.4},
    "videos/two_faces.mp4": {"size": (480, 270), "fps": 12.017, "keyframe_every_s": 4.66},
    "videos/three_faces_walking.mp4": {"size": (480, 270), "fps": 12.023, "keyframe_every_s": 3.41},
}

class FaultyCamera(RtspServer):
    """The bench's RTSP camera (``RtspServer``) with the faults the live tests inject: power loss, reboot, a hang."""

    def kill(self) -> None:
        """Kills the server at once (SIGKILL), like a camera losing power; ``start()`` brings it back."""
        process, self.process = self.process, None
        if process is None:
            return
        self._signal(process, signal.SIGKILL)
        process.wait()
        process.stdout.close()

    def restart(self) -> str:
        """Stops and starts the server on the same port; returns the (same) URL."""
        self.stop()
        return self.start()

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its sockets open but sends nothing (a hung camera)."""
        self._signal(self.process, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after ``freeze()``: the stream resumes where the clock now is."""
        self._signal(self.process, signal.SIGCONT)


def require_rtsp_server() -> None:
    """Skips the calling test with the reason when the RTSP test server cannot run here."""
    reason = rtsp_server_missing()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def rtsp_server_factory():
    """``make(video) -> FaultyCamera``, started; all are stopped at teardown."""
    require_rtsp_server()
    servers: list[FaultyCamera] = []

    def make(video: str | os.PathLike) -> FaultyCamera:
        server = FaultyCamera(video)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def rtsp_server(rtsp_server_factory):
    """A started server looping the Wolfgang clip (640x360, 23.98 fps, a keyframe every 3 s)."""
    return rtsp_server_factory(shared("videos/WolfgangLanger_Pexels.mp4"))


@pytest.fixture(scope="session")
def clip_720p(tmp_path_factory) -> Path:
    """A 1280x720 H.264 MP4 (High profile with B-frames, 23.98 fps, IDR every 24 frames, 5 s, no audio).

    No shared clip is 720p; this one is the Wolfgang clip scaled up and encoded with PyAV's libx264
    (about 2 s on 2 busy cores). The short GOP makes a client's first frame come within 1 s.
    """
    import av

    source = shared("videos/WolfgangLanger_Pexels.mp4")
    path = tmp_path_factory.mktemp("clips") / "wolfgang_720p.mp4"
    rate = Fraction(24000, 1001)
    with av.open(str(source)) as inp, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate,
                                options={"preset": "veryfast", "g": "24", "keyint_min": "24", "crf": "28"})
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.time_base = 1 / rate
        for index, frame in enumerate(inp.decode(video=0)):
            if index == 120:
                break
            scaled = frame.reformat(width=1280, height=720, format="yuv420p")
            scaled.pts, scaled.time_base = index, 1 / rate
            out.mux(stream.encode(scaled))
        out.mux(stream.encode(None))
    return path


# -- headless Chromium ------------------------------------------------------------------------------
