"""The live preview page (``emoray live --serve``): odd source names and the Host header check.

A real PreviewServer on a free port, no models: frames and faces are published by hand.
"""

from __future__ import annotations

import html
import http.client
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from pipeline.preview import PreviewServer

LABELS = "angry disgust fear happy sad surprise neutral".split()
TITLE = 'cam & "hall" <1>'
NASTY_TITLE = 'cam & "hall"\n<1> \'x\' </script><script>alert(1)</script> \\ end'


def publish(server: PreviewServer, sequence: int = 0) -> None:
    """One 64x48 grey frame with a happy face, as pipeline/live.py hands it over (state of frame 3)."""
    probabilities = np.full((1, len(LABELS)), 0.1 / (len(LABELS) - 1), np.float32)
    probabilities[0, LABELS.index("happy")] = 0.9
    state = {"frame": 3, "latency_ms": 12.0,
             "faces": [{"face_index": 0, "track_id": 0, "box": [8.0, 8.0, 40.0, 40.0], "det_score": 0.99,
                        "emotion": "happy", "emotion_score": 0.9,
                        "probabilities": {label: round(float(p), 4) for label, p in zip(LABELS, probabilities[0])}}]}
    server.publish(sequence, np.full((48, 64, 3), 128, np.uint8), np.array([[8.0, 8.0, 40.0, 40.0]], np.float32),
                   probabilities, np.array([0]), state)


@contextmanager
def serving(title: str = TITLE, host: str = "127.0.0.1") -> Iterator[tuple[PreviewServer, int]]:
    server = PreviewServer(host, 0, LABELS, title).start()
    try:
        publish(server)
        yield server, int(server.url.rstrip("/").rsplit(":", 1)[1])
    finally:
        server.close()


def get(port: int, path: str = "/", host: str | None = None) -> tuple[int, bytes]:
    """GET ``path`` from 127.0.0.1:``port`` with exactly this Host header (None: none at all)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("GET", path, skip_host=True)
        if host is not None:
            connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def element_text(page: str, element_id: str) -> str:
    """The text of the ``<p>`` of this id, as a browser shows it (tags left out, entities read)."""
    match = re.search(rf'<p [^>]*id="{element_id}">(.*?)</p>', page, re.DOTALL)
    assert match, f"no #{element_id} in the page"
    return html.unescape(re.sub(r"<[^>]*>", "", match.group(1)))


def test_the_title_is_shown_as_text_whatever_it_contains():
    with serving(NASTY_TITLE) as (_, port):
        status, body = get(port, host=f"127.0.0.1:{port}")
    page = body.decode()
    assert status == 200
    assert element_text(page, "status-0") == NASTY_TITLE  # the first load shows the title, not entities
    assert "</script><script>alert(1)" not in page


def test_a_title_with_a_right_to_left_override_cannot_turn_the_status_line_around():
    with serving("cam\u202egpj.mp4") as (_, port):
        page = get(port, host=f"127.0.0.1:{port}")[1].decode()
    assert "\u202e" not in page  # shown as its code point, not obeyed
    assert '<bdi>cam[U+202E]gpj.mp4</bdi><span class="state" id="state-0"></span></p>' in page
    assert "<title>emoray live: \u2068cam[U+202E]gpj.mp4\u2069</title>" in page


def test_the_status_line_shows_the_title_as_text_after_the_script_refreshes_it(chromium):
    with serving(TITLE) as (server, port):
        stop = threading.Event()

        def camera() -> None:  # a live stream, so Chromium's virtual time is not held up by it
            sequence = 1
            while not stop.wait(0.05):
                publish(server, sequence)
                sequence += 1

        thread = threading.Thread(target=camera, daemon=True)
        thread.start()
        try:
            dom, _ = chromium(f"http://127.0.0.1:{port}/", timeout=10, virtual_time_budget=2.0)
        finally:
            stop.set()
            thread.join()
    status = element_text(dom, "status-0")
    assert status.startswith(f"{TITLE} · frame 3"), status  # the script ran and set plain text


def test_loopback_server_answers_its_own_names_only():
    """A DNS name the attacker points at 127.0.0.1 (DNS rebinding) gets nothing, on any endpoint."""
    with serving() as (_, port):
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "127.0.0.1", "localhost"):
            assert get(port, "/faces.json", host)[0] == 200, host
        for path in ("/", "/faces.json", "/frame.jpg", "/stream.mjpg", "/frame/0.jpg", "/stream/0.mjpg"):
            assert get(port, path, f"evil.example:{port}")[0] == 403, path
            assert get(port, path, "evil.example")[0] == 403, path
            assert get(port, path, None)[0] == 403, path  # no Host header (HTTP/1.0 style)


def test_all_interfaces_server_answers_ip_literals_but_no_dns_name():
    with serving(host="0.0.0.0") as (_, port):
        assert get(port, "/faces.json", f"192.0.2.7:{port}")[0] == 200
        assert get(port, "/faces.json", f"localhost:{port}")[0] == 200
        assert get(port, "/faces.json", f"evil.example:{port}")[0] == 403
        assert get(port, "/faces.json", "evil.example")[0] == 403
        assert get(port, "/faces.json", None)[0] == 403
