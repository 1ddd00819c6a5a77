"""Live mode against a real RTSP server on 127.0.0.1 serving shared clips: results, reconnects, failures, preview."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

import pyarrow.parquet as pq

from jobs.spec import LiveSourceOptions, ModelOptions
from models.datasets import FER_LABELS
from pipeline.live import LiveSession, LiveSource
from pipeline.query import connect as query_connect
from pipeline.sources.live import LiveReader
from tests.conftest import shared

EMORAY = [sys.executable, "-m", "pipeline.cli"]
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def live_process(*args: str) -> Iterator[subprocess.Popen]:
    """``emoray live ARGS`` as a child process; killed with its process group if the test leaves it running."""
    process = subprocess.Popen([*EMORAY, "live", *args], cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


def read_records(process: subprocess.Popen, count: int, timeout: float) -> list[dict]:
    """The next ``count`` JSON-lines records from a live process (fewer when it ends or time runs out)."""
    records: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(records) < count and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        records.append(json.loads(line))
    return records


def finish(process: subprocess.Popen, timeout: float = 60) -> tuple[list[dict], dict, str]:
    """Wait for a live process; returns its remaining records, its --json summary, and stderr.

    Read through ``process.stdout`` itself, not ``communicate()``: that reads the pipe's descriptor and
    would miss lines ``read_records`` already pulled into the file object's buffer."""
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.append(process.stderr.read()), daemon=True)
    reader.start()
    out = process.stdout.read()
    process.wait(timeout=timeout)
    reader.join(timeout=timeout)
    err = "".join(errors)
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    summary = lines[-1] if lines and "processed" in lines[-1] else {}
    return [line for line in lines if "frame" in line], summary, err


def test_results_arrive_with_faces_and_sigterm_flushes_parquet(rtsp_server, tmp_path):
    out = tmp_path / "out"
    with live_process(rtsp_server.url, "-o", str(out), "--jsonl", "--json", "--roll-seconds", "2") as process:
        records = read_records(process, 40, timeout=90)
        process.send_signal(signal.SIGTERM)
        rest, summary, err = finish(process)
    records += rest
    assert process.returncode == 0, err
    assert len(records) >= 40
    with_face = [r for r in records if r["faces"]]
    assert len(with_face) >= 0.9 * len(records)  # the clip shows one face all along
    assert all(0 < r["latency_ms"] < 5000 for r in records)
    captures = [r["capture_time"] for r in records]
    assert captures == sorted(captures) and abs(captures[-1] - time.time()) < 60
    face = with_face[-1]["faces"][0]
    assert face["emotion"] in face["probabilities"] and abs(sum(face["probabilities"].values()) - 1) < 0.01
    # the summary adds up: every received frame was processed, dropped, or was the last one in flight
    assert summary["processed"] == len(records)
    assert summary["received"] - summary["processed"] - summary["dropped"] in (0, 1)
    assert summary["latency_ms"]["p50"] <= summary["latency_ms"]["p95"] <= summary["latency_ms"]["max"]
    # SIGTERM wrote what was buffered: the Parquet parts hold exactly the faces streamed as JSON lines
    faces = query_connect(out).sql("SELECT count(*), count(DISTINCT video_id), min(latency_ms) > 0 FROM faces").fetchall()[0]
    assert faces == (sum(len(r["faces"]) for r in records), 1, True)
    frames = query_connect(out).sql("SELECT count(*) FROM frames").fetchall()[0][0]
    assert frames == len(records)
    schema = pq.read_schema(next((out / "faces").glob("video_id=*/part-*.parquet")))
    assert {"capture_time", "latency_ms", "track_id", "emotion", "p_happy", "x1"} <= set(schema.names)


def test_server_killed_and_restarted_live_mode_carries_on(rtsp_server, tmp_path):
    out = tmp_path / "out"
    with live_process(rtsp_server.url, "-o", str(out), "--jsonl", "--json", "--roll-seconds", "1",
                      "--max-retries", "8", "--duration", "60") as process:
        before = read_records(process, 20, timeout=90)
        rtsp_server.stop()
        time.sleep(3)  # the camera is gone for a while; parts already written must stay
        written = sorted((out / "faces").glob("video_id=*/part-*.parquet"))
        rtsp_server.start()  # same port
        restarted = time.time()
        after = read_records(process, 20, timeout=60)
        process.send_signal(signal.SIGTERM)
        rest, summary, err = finish(process)
    assert process.returncode == 0, err
    assert len(before) == 20 and written
    assert len([r for r in after if r["capture_time"] > restarted and r["faces"]]) >= 15
    assert summary["reconnects"] >= 1
    assert all(path.exists() for path in written)  # nothing already written is lost
    rows = query_connect(out).sql("SELECT count(*) FROM frames").fetchall()[0][0]
    assert rows == summary["processed"] == len(before) + len(after) + len(rest)


def test_unreachable_url_fails_cleanly_within_the_retry_budget(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"rtsp://127.0.0.1:{probe.getsockname()[1]}/stream"
    started = time.monotonic()
    result = subprocess.run([*EMORAY, "live", url, "-o", str(tmp_path / "out"), "--max-retries", "2", "--timeout", "1"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert url in result.stderr and "gave up after 2 retries" in result.stderr
    # 3 attempts, backoff 0.5 s + 1 s: well within the budget, no hang (model loading included)
    assert time.monotonic() - started < 60


def test_reader_hands_on_the_newest_frame_and_counts_the_rest_as_dropped():
    clip = shared("videos/two_faces.mp4")
    ages = []
    with LiveReader(str(clip), LiveSourceOptions(realtime=True)) as reader:
        while (frame := reader.take(timeout=5)) is not None:
            ages.append(time.time() - frame.capture_time)
            time.sleep(0.2)  # a consumer much slower than the clip's frame rate
    assert reader.error is None and reader.dropped > 0
    assert reader.received == len(ages) + reader.dropped
    # never a backlog: what is taken was decoded moments ago (a queue behind a 0.2 s consumer of a 12 fps
    # clip would age by 0.12 s a frame, seconds by the end); 0.5 s leaves room for a busy machine's stalls
    assert max(ages) < 0.5


def test_models_as_ray_actors_give_the_same_faces(local_ray):
    """--address runs the very same classes as Ray actors: same faces, same emotions, same tracks."""
    from pipeline.live import load_models

    clip = str(shared("videos/two_faces.mp4"))
    options = ModelOptions(emotion_model="mini-xception", device="cpu")
    runs = []
    for use_ray in (False, True):
        models = load_models(options, use_ray=use_ray)
        session = LiveSession([LiveSource(LiveReader(clip), [], models, options)], models, options)
        session.start()
        try:
            runs.append([batch for _, batch in session.results()])  # a file: every frame, in order
        finally:
            session.close()
            models.close()
    local, actors = runs
    assert len(local) == len(actors) == 56 and sum(len(result) for result in local) >= len(local)
    for mine, theirs in zip(local, actors):
        assert len(mine) == len(theirs)
        assert abs(mine.xyxy - theirs.xyxy).max(initial=0) < 1.0
        assert abs(mine.probabilities - theirs.probabilities).max(initial=0) < 1e-4
        assert (mine.track_id == theirs.track_id).all()


def test_preview_page_shows_every_source_in_a_grid(rtsp_server, chromium, tmp_path):
    listing = tmp_path / "cameras.txt"  # one camera under two names: two places on the page
    listing.write_text(f"# the lab\n{rtsp_server.url} door\n\n{rtsp_server.url} desk  # the second\n")
    with live_process("--sources", str(listing), "--serve", "0", "--duration", "90") as process:
        line = process.stderr.readline()
        assert line.startswith("preview: http://127.0.0.1:"), line
        page = line.split()[1]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until both have faces out
            state = json.loads(urllib.request.urlopen(page + "faces.json", timeout=5).read())
            if all(source["faces"] for source in state["sources"]):
                break
            time.sleep(0.5)
        assert [source["source"] for source in state["sources"]] == ["door", "desk"]
        assert all(source["faces"] and source["latency_ms"] > 0 for source in state["sources"])
        for picture in ("frame.jpg", "frame/1.jpg"):
            with urllib.request.urlopen(page + picture, timeout=5) as response:
                image = cv2.imdecode(np.frombuffer(response.read(), np.uint8), cv2.IMREAD_COLOR)
            assert image.shape == (360, 640, 3)
        dom, screenshot = chromium(page, timeout=15)
    assert dom.count('data-size="640x360"') == 2  # both MJPEG pictures loaded in the browser
    assert "door" in dom and "desk" in dom
    # smoothed, then raw; "person N (#track)" once the track is matched to a person
    faces = re.findall(r'<li class="face">(?:person \d+ \()?#(\d+)\)? (\w+) ([\d.]+) \(now (\w+)\)</li>', dom)
    assert faces and all(smoothed in FER_LABELS and now in FER_LABELS for _, smoothed, _, now in faces)
    shot = cv2.imread(str(screenshot))
    assert shot[100:400, 20:500].std() > 20  # a real picture where the first stream is, not an empty box


def test_a_frozen_camera_times_out_and_is_reconnected_over_udp(rtsp_server):
    """The socket timeout is what keeps a camera that hangs with its socket open from hanging live mode."""
    with live_process(rtsp_server.url, "--jsonl", "--json", "--rtsp-transport", "udp", "--timeout", "2",
                      "--duration", "60") as process:
        before = read_records(process, 10, timeout=90)
        rtsp_server.freeze()
        time.sleep(6)
        rtsp_server.thaw()
        thawed = time.time()
        after = read_records(process, 10, timeout=60)
        process.send_signal(signal.SIGTERM)
        _, summary, err = finish(process)
    assert process.returncode == 0, err
    assert len(before) == 10 and "timed out" in err
    assert len([r for r in after if r["capture_time"] > thawed and r["faces"]]) >= 8  # one may predate the freeze
    assert summary["reconnects"] >= 1


def test_live_mode_with_its_models_in_this_process_never_imports_ray(tmp_path):
    """Ray costs start-up time and memory that a live session whose models run in-process does not need."""
    code = "\n".join([
        "import sys",
        "from pipeline.cli import main",
        f"try: main(['live', {str(shared('videos/two_faces.mp4'))!r}, '-o', {str(tmp_path / 'out')!r}, '--json'],"
        " standalone_mode=False)",
        "except SystemExit as done: print('exit', done.code)",
        "print('ray imported', 'ray' in sys.modules)",
    ])
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=300)
    lines = result.stdout.splitlines()
    assert lines[-2:] == ["exit 0", "ray imported False"], result.stderr[-2000:]
    assert json.loads(lines[0])["processed"] > 0
    assert list((tmp_path / "out").rglob("*.parquet"))
