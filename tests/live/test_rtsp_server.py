"""The live tests' instruments work: the bench's RTSP camera (pipeline/bench/camera.py) and headless Chromium."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import av
import cv2
import numpy as np
import pytest

from tests.live.conftest import PYAV_RTSP_OPTIONS


def decode_frames(url: str, count: int) -> list[av.VideoFrame]:
    """The first ``count`` frames a PyAV client decodes from ``url`` (fewer if the stream ends)."""
    frames = []
    with av.open(url, options=PYAV_RTSP_OPTIONS) as container:
        for frame in container.decode(video=0):
            frames.append(frame)
            if len(frames) == count:
                break
    return frames


def test_a_pyav_client_decodes_the_clip_live_at_its_frame_rate(rtsp_server):
    start = time.monotonic()
    frames = decode_frames(rtsp_server.url, 36)
    elapsed = time.monotonic() - start

    assert len(frames) == 36
    assert {(f.width, f.height) for f in frames} == {(640, 360)}
    # Live pace, not as fast as the file can be read: 36 frames at 23.98 fps span 1.5 s.
    assert elapsed > 1.2
    # The first client starts the clip's clock: its first frame is the file's first frame.
    with av.open(str(rtsp_server.video)) as clip:
        first_in_file = next(clip.decode(video=0)).to_ndarray(format="gray").astype(np.float32)
    assert np.abs(frames[0].to_ndarray(format="gray") - first_in_file).mean() < 4


def test_after_a_restart_on_the_same_port_a_new_client_gets_frames(rtsp_server_factory, clip_720p):
    server = rtsp_server_factory(clip_720p)
    url = server.url
    with av.open(url, options=PYAV_RTSP_OPTIONS) as container:
        frames = container.decode(video=0)
        assert (next(frames).width, next(frames).height) == (1280, 720)
        server.restart()
        # The old session ends (a dead server makes decode() just stop) within a few frames.
        assert sum(1 for _ in frames) < 30

    assert server.url == url and server.running
    frames = decode_frames(url, 30)
    assert len(frames) == 30
    assert {(f.width, f.height) for f in frames} == {(1280, 720)}


class _MjpegPage(BaseHTTPRequestHandler):
    """A page with a live MJPEG <img> (never finishes) and one whose stream never sends a frame."""

    page = (b"<!doctype html><title>live</title><h1 id='title'>Live preview</h1>"
            b"<img id='preview' src='/%s.mjpg' width='320' height='180'><p id='status'>waiting</p>"
            b"<script>document.getElementById('status').textContent = 'script ran';</script>")

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path in ("/", "/stalled"):
            body = self.page % (b"stalled" if self.path == "/stalled" else b"live")
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if not self.path.endswith(".mjpg"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        self.wfile.flush()
        image = np.zeros((180, 320, 3), np.uint8)
        image[:, :, 1] = 255  # pure green (BGR) frames
        jpeg = cv2.imencode(".jpg", image)[1].tobytes()
        try:
            while not self.server.stopping.is_set():
                if self.path == "/live.mjpg":
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                                     % (len(jpeg), jpeg))
                    self.wfile.flush()
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def mjpeg_site():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _MjpegPage)
    server.daemon_threads = True
    server.stopping = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.stopping.set()
    server.shutdown()
    server.server_close()


def test_chromium_renders_pages_whose_mjpeg_image_never_finishes(chromium, mjpeg_site):
    dom, png = chromium(mjpeg_site + "/", timeout=5)
    assert "script ran" in dom and 'id="preview"' in dom
    shot = cv2.imread(str(png))
    assert (np.abs(shot.astype(int) - (0, 255, 0)).sum(axis=2) < 60).sum() > 0.5 * 320 * 180  # the stream shows

    start = time.monotonic()
    dom, png = chromium(mjpeg_site + "/stalled", timeout=2)  # --timeout bounds a page that never loads
    assert "script ran" in dom and png.stat().st_size > 0
    assert time.monotonic() - start < 20
