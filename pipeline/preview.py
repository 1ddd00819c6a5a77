"""``emoray live --serve``: a small web page with each source's live annotated picture (MJPEG) and each track's
smoothed emotion, in a grid.

Standard library HTTP server in background threads. The processing loop only hands over the newest
frame and its faces; drawing and JPEG encoding happen in the server threads, once per frame however
many viewers there are, and only while someone is watching.

Endpoints: ``/`` the page (a grid of every source), ``/stream/<i>.mjpg`` source ``i``'s picture,
``/frame/<i>.jpg`` one picture, ``/faces.json`` each source's newest frame and faces (the first source's
also at ``/stream.mjpg`` and ``/frame.jpg``).

Only requests whose ``Host`` header names the served address are answered (see ``host_allowed``), so
a web page elsewhere cannot read the preview through DNS rebinding.
"""

from __future__ import annotations

import html
import ipaddress
import json
import logging
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

from pipeline import html_text
from pipeline.annotate import draw_faces

log = logging.getLogger(__name__)

BOUNDARY = "emorayframe"
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>emoray live: {title}</title>
<style>
 body {{ font-family: system-ui, sans-serif; margin: 1rem; background: #111; color: #eee; }}
 main {{ display: grid; gap: 1rem; grid-template-columns: repeat(auto-fill, minmax({column}, 1fr)); }}
 figure {{ margin: 0; }} img {{ max-width: 100%; background: #000; }}
 li {{ list-style: none; margin: .2rem 0; font-size: 1.1rem; }}
 .status {{ color: #999; }} bdi {{ overflow-wrap: anywhere; }}
</style></head>
<body><h1>emoray live</h1>
<main>{sources}</main>
<script>
for (const picture of document.querySelectorAll("img.picture")) {{
  picture.addEventListener("load", () => {{
    picture.dataset.size = picture.naturalWidth + "x" + picture.naturalHeight;
  }});
}}
async function refresh() {{
  try {{
    const states = (await (await fetch("/faces.json", {{cache: "no-store"}})).json()).sources;
    states.forEach((state, index) => {{
      document.getElementById("faces-" + index).replaceChildren(...state.faces.map(face => {{
        const item = document.createElement("li");
        item.className = "face";
        const emotion = face.smoothed_emotion || face.emotion, score = face.smoothed_score ?? face.emotion_score;
        const who = face.person_id == null ? "#" + face.track_id : "person " + face.person_id + " (#" + face.track_id + ")";
        item.textContent = who + " " + emotion + " " + score.toFixed(2) + " (now " + face.emotion + ")";
        return item;
      }}));
      document.getElementById("state-" + index).textContent = state.frame == null ? " · waiting" :
        " · frame " + state.frame + " · latency " + state.latency_ms.toFixed(0) + " ms";
    }});
  }} catch (error) {{
    for (const state of document.querySelectorAll(".state")) state.textContent = " · disconnected";
  }}
}}
setInterval(refresh, 300);
refresh();
</script></body></html>
"""
SOURCE = """<figure><img class="picture" id="picture{suffix}" src="/stream{path}.mjpg" alt="live annotated picture">
<figcaption><p class="status" id="status-{index}">{title}<span class="state" id="state-{index}"></span></p>
<ul id="faces-{index}">{faces}</ul></figcaption></figure>"""


@dataclass
class _Latest:
    sequence: int
    image: np.ndarray  # RGB, the size it is served at
    xyxy: np.ndarray  # boxes in pixels of ``image``
    probabilities: np.ndarray
    track_ids: np.ndarray
    state: dict


@dataclass
class _Slot:
    """One source's newest frame, and its JPEG once encoded."""

    title: str
    latest: _Latest | None = None
    encoded: tuple[int, bytes] | None = None


class PreviewServer:
    """Serves the newest annotated frame and faces of each source at ``http://host:port/``, as a grid.

    ``port`` 0 picks a free port (see ``url``). ``publish`` is cheap: it stores references only.
    Endpoints: ``/`` the page, ``/stream/<i>.mjpg`` and ``/frame/<i>.jpg`` source ``i``'s picture
    (``/stream.mjpg`` and ``/frame.jpg``: the first source's), ``/faces.json`` every source's newest frame
    and faces (``sources``; the first source's also at the top level).
    """

    def __init__(self, host: str, port: int, labels: list[str], titles: str | list[str], jpeg_quality: int = 80) -> None:
        self.labels, self.jpeg_quality = list(labels), jpeg_quality
        titles = [titles] if isinstance(titles, str) else list(titles)
        self._slots = [_Slot(title) for title in titles]
        self._condition = threading.Condition()
        self._closed = False
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._hosts = (host, self._server.server_address[0])
        self._thread = threading.Thread(target=self._server.serve_forever, name="emoray-preview", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> "PreviewServer":
        self._thread.start()
        return self

    def close(self) -> None:
        with self._condition:
            if self._closed:
                return
            self._closed = True
            self._condition.notify_all()
        self._server.shutdown()
        self._server.server_close()

    def publish(self, sequence: int, image: np.ndarray, xyxy: np.ndarray, probabilities: np.ndarray,
                track_ids: np.ndarray, state: dict, *, slot: int = 0) -> None:
        """Make this frame (RGB), its faces (boxes in its pixels) and ``state`` (for /faces.json) source
        ``slot``'s newest."""
        with self._condition:
            self._slots[slot].latest = _Latest(sequence, image, xyxy, probabilities, track_ids, state)
            self._condition.notify_all()

    def _page(self) -> bytes:
        """The page with each source's current faces already listed (the script keeps the lists fresh)."""
        sources = []
        for index, (slot, state) in enumerate(zip(self._slots, self._states())):
            items = "".join(f'<li class="face">{_escape(_who(face))} {_escape(face.get("smoothed_emotion", face["emotion"]))} '
                            f'{_escape(format(face.get("smoothed_score", face["emotion_score"]), ".2f"))} '
                            f'(now {_escape(face["emotion"])})</li>' for face in state["faces"])
            sources.append(SOURCE.format(suffix="" if index == 0 else f"-{index}", path="" if index == 0 else f"/{index}",
                                         title=html_text.text(slot.title), index=index, faces=items))
        title = " · ".join(slot.title for slot in self._slots)
        column = "480px" if len(self._slots) > 1 else "100%"
        return PAGE.format(title=html_text.isolated(title), column=column, sources="\n".join(sources)).encode()

    def _states(self) -> list[dict]:
        with self._condition:
            return [slot.latest.state if slot.latest else {"frame": None, "latency_ms": 0.0, "faces": []}
                    for slot in self._slots]

    def _faces_json(self) -> dict:
        states = [state | {"source": slot.title} for slot, state in zip(self._slots, self._states())]
        return states[0] | {"sources": states}

    def _jpeg(self, slot: int, after: int | None, timeout: float = 5.0) -> tuple[int, bytes] | None:
        """The JPEG of a source's newest frame newer than ``after`` (waits for one), encoded once per frame."""
        place = self._slots[slot]
        with self._condition:
            newer = lambda: self._closed or (place.latest is not None and place.latest.sequence != after)
            if not self._condition.wait_for(newer, timeout) or self._closed:
                return None
            latest = place.latest
            if place.encoded and place.encoded[0] == latest.sequence:
                return place.encoded
        drawn = draw_faces(latest.image, latest.xyxy, latest.probabilities, self.labels, latest.track_ids)
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        with self._condition:
            place.encoded = (latest.sequence, data.tobytes())
            return place.encoded

    def _slot_of(self, path: str, name: str, suffix: str) -> int | None:
        """Which source ``/name.suffix`` (0) or ``/name/<i>.suffix`` asks for; None when none."""
        if path == f"/{name}.{suffix}":
            return 0
        prefix = f"/{name}/"
        if path.startswith(prefix) and path.endswith(f".{suffix}") and path[len(prefix):-len(suffix) - 1].isdigit():
            index = int(path[len(prefix):-len(suffix) - 1])
            return index if index < len(self._slots) else None
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        preview = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                log.debug("preview: " + format, *args)

            def do_GET(self) -> None:  # noqa: N802 (the http.server name)
                path = self.path.split("?")[0]
                frame_slot, stream_slot = preview._slot_of(path, "frame", "jpg"), preview._slot_of(path, "stream", "mjpg")
                if not host_allowed(self.headers.get("Host"), preview._hosts):
                    self._send(403, "text/plain", b"forbidden: unexpected Host header")
                elif path == "/":
                    self._send(200, "text/html; charset=utf-8", preview._page())
                elif path == "/faces.json":
                    self._send(200, "application/json", json.dumps(preview._faces_json()).encode())
                elif frame_slot is not None:
                    frame = preview._jpeg(frame_slot, None)
                    self._send(200, "image/jpeg", frame[1]) if frame else self._send(503, "text/plain", b"no frame yet")
                elif stream_slot is not None:
                    self._stream(stream_slot)
                else:
                    self._send(404, "text/plain", b"not found")

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _stream(self, slot: int) -> None:
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                sequence = None
                try:
                    while not preview._closed:
                        frame = preview._jpeg(slot, sequence)
                        if frame is None:
                            continue  # no new frame yet (e.g. the camera is reconnecting): keep the viewer
                        sequence, data = frame
                        self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                         f"Content-Length: {len(data)}\r\n\r\n".encode() + data + b"\r\n")
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the viewer went away

        return Handler


def _who(face: dict) -> str:
    """A face's line on the page: its person once live mode matched it, and its track."""
    track = f"#{face['track_id']}"
    return track if face.get("person_id") is None else f"person {face['person_id']} ({track})"


def _escape(value: object) -> str:
    return html.escape(str(value), quote=True)


LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


def host_allowed(header: str | None, bound: tuple[str, ...]) -> bool:
    """Whether a request's ``Host`` header names the server bound to the addresses/names ``bound``.

    DNS rebinding points a DNS name the attacker controls at this server, so the browser sends that
    name as Host; answering only names we know defeats it. Allowed (any port, or none, since a port
    forward may change it):

    - the bound host itself (as configured or as bound);
    - on a loopback address (127.0.0.0/8, ::1) also ``localhost``, ``127.0.0.1`` and ``[::1]``;
    - on all interfaces (0.0.0.0, ::) any IP literal (we cannot know every address the machine has,
      and a rebinding attack needs a DNS name) and ``localhost``, but no other DNS name.

    No Host header at all (HTTP/1.0) is refused too: a browser always sends one.
    """
    name = _host_name(header) if header else None
    if name is None:
        return False
    if name in (b.lower() for b in bound):
        return True
    addresses = [_ip(b) for b in bound]
    if any(a is not None and a.is_loopback for a in addresses):
        return name in LOCAL_NAMES
    if any(a is not None and a.is_unspecified for a in addresses):
        return name == "localhost" or _ip(name) is not None
    return False


def _host_name(header: str) -> str | None:
    """The lower-case host name of a Host header (``[v6]`` unbracketed), or None when malformed."""
    header = header.strip().lower()
    if header.startswith("["):
        name, bracket, rest = header[1:].partition("]")
        if not bracket or _ip(name) is None or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    else:
        name, _, port = header.partition(":")
    return name if name and (not port or port.isdigit()) else None


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
