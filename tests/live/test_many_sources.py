"""Live mode over several sources at once: real RTSP cameras on 127.0.0.1, one of them failing."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline.live import read_sources
from pipeline.query import connect as query_connect
from pipeline.samples import make_clip
from pipeline.sources.live import LiveSourceError
from tests.conftest import shared
from tests.live.test_live_mode import EMORAY, PROJECT_ROOT, live_process


class Lines:
    """Reads a live process's JSON lines in a thread as they come (so its pipe never fills): (arrival, record)."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.records: list[tuple[float, dict]] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            if line.strip():
                self.records.append((time.time(), json.loads(line)))

    def of(self, source: str) -> list[dict]:
        return [record for _, record in self.records if record.get("source") == source]

    def wait_for(self, enough, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not enough():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.2)

    def join(self) -> None:
        self._thread.join(timeout=30)


@pytest.fixture(scope="module")
def camera_clip(tmp_path_factory) -> Path:
    """What the issue's cameras send: 640x360, 10 fps, no B-frames, a keyframe a second (the astronaut)."""
    return make_clip(tmp_path_factory.mktemp("cameras") / "camera-10fps.mp4", width=640, height=360, seconds=8.0,
                     fps=10, camera_like=True)


def free_port_url() -> str:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        return f"rtsp://127.0.0.1:{probe.getsockname()[1]}/stream"


def test_four_cameras_share_the_models_and_one_losing_power_stalls_none_of_the_others(rtsp_server_factory,
                                                                                        camera_clip, tmp_path):
    cameras = [rtsp_server_factory(camera_clip) for _ in range(4)]
    urls = [camera.url for camera in cameras]
    out = tmp_path / "out"
    with live_process(*urls, "-o", str(out), "--jsonl", "--json", "--roll-seconds", "2", "--timeout", "2",
                      "--max-retries", "8", "--duration", "60") as process:
        lines = Lines(process)
        lines.wait_for(lambda: all(len(lines.of(url)) >= 10 for url in urls), 90, "10 results from every camera")
        cameras[0].kill()  # power lost
        killed = time.time()
        time.sleep(6)
        cameras[0].start()  # back on the same port
        back = time.time()
        lines.wait_for(lambda: any(r["capture_time"] > back for r in lines.of(urls[0])), 40, "camera 0 to come back")
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        lines.join()
        stderr = process.stderr.read()
    assert process.returncode == 0, stderr
    *results, (_, summary) = lines.records
    assert {record["source"] for _, record in results} == set(urls)
    # while camera 0 was down, every other camera went on: results all along, never a gap of 2 s
    for url in urls[1:]:
        during = [record["capture_time"] for record in lines.of(url) if killed + 0.5 < record["capture_time"] < back]
        assert len(during) >= 10, (url, len(during))
        assert max(b - a for a, b in zip([killed + 0.5, *during], [*during, back])) < 2.0, url
    # the summary: one entry per camera, in order, each adding up; camera 0 reconnected
    assert [source["source"] for source in summary["sources"]] == urls
    for source in summary["sources"]:
        assert source["processed"] == len(lines.of(source["source"])) and source["error"] is None
        assert source["received"] - source["processed"] - source["dropped"] in (0, 1)
        assert 0 < source["latency_ms"]["p50"] <= source["latency_ms"]["p95"] <= source["latency_ms"]["max"]
    assert summary["sources"][0]["reconnects"] >= 1
    assert summary["processed"] == sum(source["processed"] for source in summary["sources"])
    # each camera's rows are its own partition, with its name; one session
    db = query_connect(out)
    frames = dict(db.sql("SELECT source, count(*) FROM frames GROUP BY source").fetchall())
    assert frames == {source["source"]: source["processed"] for source in summary["sources"]}
    assert db.sql("SELECT count(DISTINCT video_id), count(DISTINCT session_id) FROM frames").fetchall() == [(4, 1)]
    faces = db.sql("SELECT source, count(*) FROM faces GROUP BY source").fetchall()
    assert dict(faces) == {url: sum(len(r["faces"]) for r in lines.of(url)) for url in urls}


def test_a_source_that_never_connects_is_reported_and_the_others_go_on(tmp_path):
    clip = str(shared("videos/two_faces.mp4"))
    unreachable = free_port_url()
    listing = tmp_path / "sources.txt"
    listing.write_text(f"{clip} recorded\n{unreachable} gone\n")
    out = tmp_path / "out"
    result = subprocess.run([*EMORAY, "live", "--sources", str(listing), "-o", str(out), "--jsonl", "--json",
                             "--max-retries", "1", "--timeout", "1"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 1  # a source failed
    *records, summary = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert Counter(record["source"] for record in records) == {"recorded": 56}  # every frame of the file
    assert [record["frame"] for record in records] == list(range(56))
    recorded, gone = summary["sources"]
    assert (recorded["source"], recorded["processed"], recorded["error"]) == ("recorded", 56, None)
    assert gone["source"] == "gone" and gone["processed"] == 0 and "gave up after 1 retries" in gone["error"]
    assert unreachable in result.stderr and "gave up" in result.stderr
    rows = query_connect(out).sql("SELECT source, count(*) FROM frames GROUP BY source").fetchall()
    assert rows == [("recorded", 56)]


def test_a_sources_file_names_its_sources_and_refuses_what_it_cannot_read(tmp_path):
    listing = tmp_path / "cameras.txt"
    listing.write_text("# booths\nrtsp://10.0.0.5/stream booth-1\n\nrtsp://10.0.0.6/stream   # no name\n")
    assert read_sources(listing) == [("rtsp://10.0.0.5/stream", "booth-1"), ("rtsp://10.0.0.6/stream", None)]
    listing.write_text("rtsp://10.0.0.5/stream a b\n")
    with pytest.raises(LiveSourceError, match=r"cameras.txt:1: expected 'URL \[NAME\]'"):
        read_sources(listing)
    listing.write_text("rtsp://10.0.0.5/stream same\nrtsp://10.0.0.6/stream same\n")
    with pytest.raises(LiveSourceError, match="same name"):
        read_sources(listing)
    clip = str(shared("videos/two_faces.mp4"))
    twice = subprocess.run([*EMORAY, "live", clip, clip, "--jsonl"], cwd=PROJECT_ROOT, capture_output=True,
                           text=True, timeout=120)
    assert twice.returncode != 0 and "two sources are both called" in twice.stderr
    none = subprocess.run([*EMORAY, "live", "--jsonl"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert none.returncode == 2 and "no source" in none.stderr
