"""``emoray run`` end to end on the shared clips and on bad inputs, on a real local Ray."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import re
import tempfile
import time
import urllib.parse
from pathlib import Path

import av
import cv2
import numpy as np
import psutil
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from models import registry
from pipeline.cli import main
from pipeline.sources.file import iter_frames
from tests.conftest import read_rgb, shared
from tests.pipeline.media import rotated_phone_clip, truncated_copy, undecodable_copy

GOOD = ["WolfgangLanger_Pexels.mp4", "two_faces.mp4", "no_face.mp4", "face_noface.mov"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Good clips (links to ../shared) beside every kind of bad input, in one directory tree."""
    root = tmp_path_factory.mktemp("inputs")
    for name in GOOD:
        (root / name).symlink_to(shared(f"videos/{name}"))
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "notes.mp4").write_text("this is a text file, not a video\n")
    truncated_copy(shared("videos/WolfgangLanger_Pexels.mp4"), bad / "truncated.mp4")
    undecodable_copy(shared("videos/WolfgangLanger_Pexels.mp4"), bad / "noise.mp4")
    (bad / "gone.mp4").symlink_to(root / "does-not-exist.mp4")  # unreadable: nothing behind the name
    rotated_phone_clip(root / "phone.mp4", read_rgb("photos/multi_face.jpg"))
    return root


def _run(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(main, ["run", *args, "--json"], catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout[result.stdout.index("{"):])


@pytest.fixture(scope="module")
def job(local_ray, inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    exit_code, summary = _run(str(inputs), "-o", str(out))
    return out, exit_code, {Path(v["path"]).name: v for v in summary["videos"]}


def _table(out: Path, table: str, videos: dict, name: str):
    """One video's rows of ``faces`` or ``frames``, read with pyarrow from its hive partition."""
    return ds.dataset(out / table / f"video_id={videos[name]['video_id']}").to_table().to_pandas()


def test_bad_inputs_fail_with_the_file_and_reason_while_good_ones_complete(job):
    out, exit_code, videos = job
    assert exit_code == 1
    expected_errors = {
        "empty.mp4": "empty file",
        "notes.mp4": "not a readable video",
        "truncated.mp4": "truncated",
        "noise.mp4": "cannot decode h264",
        "gone.mp4": "cannot read",
    }
    for name, reason in expected_errors.items():
        assert videos[name]["status"] == "failed", name
        assert name in videos[name]["error"] and reason in videos[name]["error"], videos[name]["error"]
    for name in GOOD + ["phone.mp4"]:
        assert videos[name]["status"] == "complete", (name, videos[name]["error"])
    failed_ids = [v["video_id"] for v in videos.values() if v["status"] == "failed" and v["video_id"]]
    assert not any((out / "faces" / f"video_id={i}").exists() for i in failed_ids)
    assert json.loads((out / "job.json").read_text())["summary"]["failed"] == 5


def test_one_woman_laughing_at_the_end_of_her_clip(job):
    out, _, videos = job
    faces, frames = (_table(out, t, videos, "WolfgangLanger_Pexels.mp4") for t in ("faces", "frames"))
    assert len(frames) == 472 and videos["WolfgangLanger_Pexels.mp4"]["frames"] == 472
    assert (frames["num_faces"] == 1).mean() >= 0.95
    last = faces[faces["pts_time"] > frames["pts_time"].max() - 3]
    assert last["emotion"].value_counts().idxmax() == "happy"
    assert faces["track_id"].value_counts().iloc[0] >= 0.9 * len(faces)
    probabilities = faces[[c for c in faces.columns if c.startswith("p_")]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert len(faces["landmarks"].iloc[0]) == 10


def test_two_faces_no_face_and_hevc(job):
    out, _, videos = job
    assert (_table(out, "frames", videos, "two_faces.mp4")["num_faces"] == 2).mean() > 0.5
    assert len(_table(out, "faces", videos, "no_face.mp4")) == 0
    decoded = sum(1 for _ in iter_frames(shared("videos/no_face.mp4")))
    assert len(_table(out, "frames", videos, "no_face.mp4")) == decoded == videos["no_face.mp4"]["frames"]
    hevc = _table(out, "frames", videos, "face_noface.mov")
    assert len(hevc) == 169 and 0 < hevc["num_faces"].sum() < 169


def test_rotated_phone_video_gives_results_in_displayed_orientation(job):
    out, _, videos = job
    manifest = json.loads((out / "manifest" / f"{videos['phone.mp4']['video_id']}.json").read_text())
    assert manifest["probe"]["rotation"] == 90 and manifest["probe"]["width"] == 1000
    faces = _table(out, "faces", videos, "phone.mp4")
    per_frame = faces.groupby("frame_index").size()
    assert (per_frame >= 4).all() and len(per_frame) == 12
    assert faces["x2"].max() <= 1000 and faces["y2"].max() <= 666 and faces["x2"].max() > 700


def test_annotated_videos_play_with_the_processed_frames_and_the_audio(job):
    out, _, videos = job
    for name, has_audio in [("WolfgangLanger_Pexels.mp4", True), ("two_faces.mp4", False)]:
        with av.open(str(out / "annotated" / name)) as container:
            assert bool(container.streams.audio) == has_audio
            assert sum(1 for _ in container.decode(video=0)) == videos[name]["frames"]


def test_parquet_is_hive_partitioned_with_model_ids_in_metadata(job):
    out, _, videos = job
    video = videos["two_faces.mp4"]["video_id"]
    metadata = pq.read_schema(out / "faces" / f"video_id={video}" / "part-0.parquet").metadata
    assert metadata[b"emoray.detector"].startswith(b"retinaface-mobilenet0.25@")
    assert metadata[b"emoray.detector"].endswith(b"+onnx")  # the backend on a CPU, part of the model id
    assert metadata[b"emoray.emotion_model"].startswith(registry.DEFAULT_EMOTION_MODEL.encode() + b"@")
    columns = ds.dataset(out / "faces", partitioning="hive").schema.names
    assert columns[:5] == ["video_path", "frame_index", "pts_time", "face_index", "track_id"]
    assert "video_id" in columns and "p_neutral" in columns
    assert {"face_px", "yaw", "pitch", "sharpness"} <= set(columns)


def test_query_counts_equal_the_parquet_row_counts(job):
    out, _, _ = job
    runner = CliRunner()
    for table in ("faces", "frames"):
        result = runner.invoke(main, ["query", str(out), f"SELECT count(*) AS n FROM {table}", "--format", "json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)[0]["n"] == ds.dataset(out / table, partitioning="hive").count_rows()
    per_video = json.loads(runner.invoke(main, ["query", str(out), "SELECT video_id, count(*) AS n FROM frames GROUP BY 1",
                                                "--format", "json"]).output)
    assert len(per_video) == len(GOOD) + 1  # the good clips and the phone clip
    bad = runner.invoke(main, ["query", str(out), "SELECT nope FROM faces"])
    assert bad.exit_code == 1 and "query failed" in bad.output


def test_a_rerun_skips_complete_videos_and_retries_failed_ones(job, inputs):
    out, _, _ = job
    before = {p: p.stat().st_mtime_ns for p in (out / "faces").rglob("*.parquet")}
    exit_code, summary = _run(str(inputs), "-o", str(out))
    statuses = {Path(v["path"]).name: v["status"] for v in summary["videos"]}
    assert exit_code == 1
    assert all(statuses[name] == "skipped" for name in GOOD + ["phone.mp4"])
    assert statuses["truncated.mp4"] == "failed"
    assert before == {p: p.stat().st_mtime_ns for p in (out / "faces").rglob("*.parquet")}


def test_a_rerun_with_the_other_backend_redoes_the_video_instead_of_mixing_rows(local_ray, tmp_path):
    import ray

    clip = str(shared("videos/two_faces.mp4"))
    node = ray.get_runtime_context().get_node_id()  # the module's Ray, which these runs did not start
    runs = [_run(clip, "-o", str(tmp_path), "--no-annotate", "--backend", name) for name in ("torch", "onnx", "onnx")]
    statuses = [summary["videos"][0]["status"] for _, summary in runs]
    assert statuses == ["complete", "complete", "skipped"]
    assert ray.is_initialized() and ray.get_runtime_context().get_node_id() == node  # left running, and used
    manifest = json.loads(next((tmp_path / "manifest").glob("*.json")).read_text())
    assert manifest["models"]["detector"].endswith("+onnx") and manifest["models"]["emotion_model"].endswith("+onnx")


def test_an_unwritable_output_fails_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = CliRunner().invoke(main, ["run", str(shared("videos/two_faces.mp4")), "-o", str(blocker / "out")])
    assert result.exit_code == 1
    assert "output directory is not writable" in result.output and str(blocker) in result.output


def test_a_run_killed_half_way_then_rerun_equals_a_clean_run(job, tmp_path):
    clean_out, _, _ = job
    out = tmp_path / "out"
    names = ["two_faces.mp4", "WolfgangLanger_Pexels.mp4"]
    command = [sys.executable, "-m", "pipeline.cli", "run", *[str(shared(f"videos/{n}")) for n in names],
               "-o", str(out), "--no-annotate"]
    ray_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    env = os.environ | {"RAY_TMPDIR": ray_dir}
    log = open(tmp_path / "killed-run.log", "w")
    process = subprocess.Popen(command, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not list((out / "manifest").glob("*.json")) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
        assert list((out / "manifest").glob("*.json")), "the first video never completed"
        ray_processes = psutil.Process(process.pid).children(recursive=True)
        os.kill(process.pid, signal.SIGKILL)  # the driver alone: the embedded Ray must end with it
        process.wait()
        _, leftovers = psutil.wait_procs(ray_processes, timeout=15)
        assert ray_processes and not leftovers, leftovers
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        shutil.rmtree(ray_dir, ignore_errors=True)
    manifests = {p.stem for p in (out / "manifest").glob("*.json")}
    published = {p.parent.name.removeprefix("video_id=") for p in out.glob("f*/video_id=*/*.parquet")}
    assert published == manifests  # the video cut off by the kill shows no rows
    exit_code, summary = _run(*[str(shared(f"videos/{n}")) for n in names], "-o", str(out), "--no-annotate")
    assert exit_code == 0
    assert sorted(v["status"] for v in summary["videos"]) in (["complete", "skipped"], ["complete", "complete"])
    for table in ("faces", "frames"):
        rerun = ds.dataset(out / table, partitioning="hive").to_table().to_pandas()
        clean = ds.dataset(clean_out / table, partitioning="hive").to_table(
            filter=ds.field("video_id").isin(list(rerun["video_id"].unique()))).to_pandas()
        keys = ["video_id", "frame_index"] + (["face_index"] if table == "faces" else [])
        rerun, clean = rerun.sort_values(keys).reset_index(drop=True), clean.sort_values(keys).reset_index(drop=True)
        assert len(rerun) == len(clean) > 0
        numeric = [c for c in rerun.columns if rerun[c].dtype.kind in "fi"]
        np.testing.assert_allclose(rerun[numeric].to_numpy(float), clean[numeric].to_numpy(float), atol=1e-3)
    assert not list(out.rglob("*.tmp"))


def _rows(out: Path, table: str, video_id: str | None = None):
    keys = {"faces": ["frame_index", "face_index"], "frames": ["frame_index"], "tracks": ["track_id"],
            "episodes": ["track_id", "start_frame"]}[table]
    path = out / table / f"video_id={video_id}" if video_id else out / table
    rows = ds.dataset(path, partitioning="hive").to_table().to_pandas().sort_values(keys).reset_index(drop=True)
    return rows.drop(columns=[c for c in ("video_id", "video_path") if c in rows.columns])


def test_run_batch_from_python_gives_the_rows_of_emoray_run(job, tmp_path):
    from pipeline import run_batch

    out, _, videos = job
    clip = shared("videos/two_faces.mp4")
    outcomes = run_batch([clip], tmp_path / "out", annotate=False)
    assert [(o.status, o.frames, o.faces) for o in outcomes] == [("complete", 56, videos["two_faces.mp4"]["faces"])]
    for table in ("faces", "frames"):
        mine, theirs = _rows(tmp_path / "out", table), _rows(out, table, videos["two_faces.mp4"]["video_id"])
        assert mine.equals(theirs), table  # the same segments, batches and model threads on this machine: same bits
    with pytest.raises(TypeError):
        run_batch([clip], tmp_path / "other", no_such_option=1)


def test_live_mode_replays_a_file_frame_by_frame_with_the_rows_of_emoray_run(job, tmp_path):
    out, _, videos = job
    clip = shared("videos/two_faces.mp4")
    result = CliRunner().invoke(main, ["live", str(clip), "-o", str(tmp_path / "live"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["received"] == summary["processed"] == 56 and summary["dropped"] == 0
    live, batch = _rows(tmp_path / "live", "faces"), _rows(out, "faces", videos["two_faces.mp4"]["video_id"])
    assert len(live) == len(batch) == videos["two_faces.mp4"]["faces"]
    for column in ("frame_index", "face_index", "track_id", "emotion"):
        assert (live[column] == batch[column]).all(), column
    np.testing.assert_allclose(live["pts_time"], batch["pts_time"], atol=1e-6)
    np.testing.assert_allclose(live[["x1", "y1", "x2", "y2"]], batch[["x1", "y1", "x2", "y2"]], atol=1e-2)
    probabilities = [c for c in batch.columns if c.startswith("p_")]
    np.testing.assert_allclose(live[probabilities], batch[probabilities], atol=1e-4)
    # live smooths causally (the past only), and keeps its tracks and episodes tables as parts roll
    assert live["smoothed_emotion"].notna().all() and len(_rows(tmp_path / "live", "tracks")) == 2
    assert set(_rows(tmp_path / "live", "episodes")["track_id"]) <= {0, 1}


def test_tracks_follow_each_person_and_smoothing_calms_the_labels(job):
    out, _, videos = job
    for name, people in (("WolfgangLanger_Pexels.mp4", 1), ("two_faces.mp4", 2)):
        faces = _rows(out, "faces", videos[name]["video_id"])
        assert faces["track_id"].nunique() == people, name
        assert len(_rows(out, "tracks", videos[name]["video_id"])) == people
        ordered = faces.sort_values(["track_id", "frame_index"])
        same_track = ordered["track_id"].eq(ordered["track_id"].shift())
        raw = (ordered["emotion"].ne(ordered["emotion"].shift()) & same_track).sum()
        smooth = (ordered["smoothed_emotion"].ne(ordered["smoothed_emotion"].shift()) & same_track).sum()
        assert raw > 0 and smooth * 3 <= raw, (name, raw, smooth)
    episodes = _rows(out, "episodes", videos["WolfgangLanger_Pexels.mp4"]["video_id"])
    laugh = episodes[episodes["emotion"] == "happy"]
    assert laugh["end_time"].max() > 19 and laugh["duration_s"].max() > 5  # she laughs at the end


def test_episodes_lie_inside_their_tracks_and_never_overlap(job):
    out, _, _ = job
    query = lambda sql: json.loads(CliRunner().invoke(main, ["query", str(out), sql, "--format", "json"]).output)
    outside = query("SELECT count(*) AS n FROM episodes e JOIN tracks t USING (video_id, track_id) "
                    "WHERE e.start_frame < t.first_frame OR e.end_frame > t.last_frame OR e.duration_s < 0.5")
    overlapping = query("SELECT count(*) AS n FROM episodes a JOIN episodes b USING (video_id, track_id) "
                        "WHERE a.start_frame < b.start_frame AND a.end_frame >= b.start_frame")
    assert outside == [{"n": 0}] and overlapping == [{"n": 0}]
    assert query("SELECT count(*) AS n FROM episodes")[0]["n"] >= 3
    shares = query("SELECT max(abs(share_angry + share_disgust + share_fear + share_happy + share_sad "
                   "+ share_surprise + share_neutral - 1)) AS err FROM tracks")
    assert shares[0]["err"] < 1e-5


@pytest.mark.parametrize("fps", [None, 5.0])
def test_track_counts_are_the_people_in_the_clip_also_sampled(local_ray, tmp_path, fps):
    clips = {"two_faces.mp4": 2, "three_faces_walking.mp4": 3, "WolfgangLanger_Pexels.mp4": 1}
    if fps is None:
        clips = {"three_faces_walking.mp4": 3}  # the others are in the module's job
    args = [str(shared(f"videos/{name}")) for name in clips] + ["-o", str(tmp_path / "out"), "--no-annotate"]
    exit_code, summary = _run(*args, *(["--fps", str(fps)] if fps else []))
    assert exit_code == 0
    rows = json.loads(CliRunner().invoke(main, [
        "query", str(tmp_path / "out"), "SELECT regexp_extract(path, '[^/]+$') AS name, count(*) AS n "
        "FROM tracks JOIN videos USING (video_id) GROUP BY 1", "--format", "json"]).output)
    counts = {row["name"]: row["n"] for row in rows}
    assert {name: int(n) for name, n in counts.items()} == clips


# Chromium's own background services (clock, updates, sign-in): not requests of the page
CHROMIUM_OWN_HOSTS = {"clients2.google.com", "redirector.gvt1.com", "accounts.google.com", "update.googleapis.com",
                      "optimizationguide-pa.googleapis.com", "content-autofill.googleapis.com"}


def test_the_report_shows_every_video_and_loads_nothing(job, chromium, tmp_path):
    import http.server
    import threading

    out, _, videos = job
    result = CliRunner().invoke(main, ["report", str(out), "-o", str(tmp_path / "report.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report.html").read_text()
    assert "<script" not in page and "url(" not in page and "@import" not in page
    references = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert references and all(ref.startswith(("data:image/", "#")) or "://" not in ref for ref in references)
    requests = []

    class Proxy(http.server.BaseHTTPRequestHandler):  # any request the page makes would come here
        def do_GET(self):
            host = urllib.parse.urlsplit(self.path if "://" in self.path else f"//{self.path}").hostname
            if host not in CHROMIUM_OWN_HOSTS:
                requests.append(self.path)
            self.send_error(502)

        do_CONNECT = do_POST = do_GET

        def log_message(self, *args):
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        dom, png = chromium((tmp_path / "report.html").as_uri(), window_size=(1200, 2400), extra_args=(
            f"--proxy-server=http://127.0.0.1:{proxy.server_address[1]}", "--proxy-bypass-list=<-loopback>",
            "--enable-logging=stderr", "--v=0"))
    finally:
        proxy.shutdown()
    assert requests == []
    assert "CONSOLE" not in png.with_suffix(".log").read_text(errors="replace")
    for name, video in videos.items():
        if video["status"] == "complete":
            assert name in dom, name
    assert dom.count('class="timeline"') >= 4  # the complete videos with faces have their charts
    picture = cv2.imread(str(png))
    assert picture is not None and picture.std() > 20  # not blank
