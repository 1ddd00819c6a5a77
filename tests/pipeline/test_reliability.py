"""``emoray run`` under hostile use: nested output folders, FIFOs, late failures, two writers, signals.

Real processes, real signals and real files on a real local Ray; the clips are the shortest shared ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import psutil
import pytest
from click.testing import CliRunner

from jobs.discover import video_id
from pipeline.cli import main
from pipeline.query import query
from tests.conftest import read_rgb, shared

CLIPS = ["two_faces.mp4", "three_faces_walking.mp4"]
LOOPBACK = ("127.0.0.1", "::ffff:127.0.0.1", "::1")


def _run(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(main, ["run", *args, "--json"], catch_exceptions=False)
    assert "{" in result.stdout, result.output
    return result.exit_code, json.loads(result.stdout[result.stdout.index("{"):])


def _count(out: Path, sql: str):
    return query(out, sql).fetchall()


def _gif(path: Path) -> Path:
    """An animated GIF of three frames of a photo with faces."""
    image = cv2.resize(read_rgb("photos/multi_face.jpg"), (480, 320))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("gif", rate=4, width=480, height=320, pix_fmt="rgb8")
        for _ in range(3):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def nest(local_ray, tmp_path_factory):
    """``emoray run nest -o nest/out`` three times: clips, a GIF, a FIFO and a text file in ``nest``."""
    root = tmp_path_factory.mktemp("nest")
    for name in CLIPS:
        (root / name).symlink_to(shared(f"videos/{name}"))
    _gif(root / "anim.gif")
    os.mkfifo(root / "camera.mp4")
    (root / "notes.txt").write_text("not media")
    runs = [_run(str(root), "-o", str(root / "out")) for _ in range(3)]
    return root, runs


def test_an_output_folder_inside_the_input_folder_is_never_processed(nest):
    root, runs = nest
    first = {Path(v["path"]).name: v for v in runs[0][1]["videos"]}
    assert {name for name, v in first.items() if v["status"] == "complete"} == {*CLIPS, "anim.gif"}
    for exit_code, summary in runs:
        assert exit_code == 0
        skipped_out = [v for v in summary["videos"] if v["path"] == str(root / "out")]
        assert len(skipped_out) == 1 and "an emoray output folder, not searched" in skipped_out[0]["error"]
        assert not any("/out/" in v["path"] for v in summary["videos"])
    [(videos,)], [(faces,)] = _count(root / "out", "SELECT count(*) FROM videos"), _count(root / "out", "SELECT count(*) FROM faces")
    assert videos == 3 and faces == sum(v["faces"] for v in first.values())


def test_a_fifo_is_skipped_with_a_reason(nest):
    _, runs = nest
    fifo = [v for v in runs[0][1]["videos"] if v["path"].endswith("camera.mp4")]
    assert fifo[0]["status"] == "skipped" and "not a regular file (a FIFO)" in fifo[0]["error"]


def test_gifs_are_found_in_folders_and_named_files_follow_the_same_rule(nest, tmp_path):
    root, runs = nest
    gif = next(v for v in runs[0][1]["videos"] if v["path"].endswith("anim.gif"))
    assert gif["frames"] == 3 and gif["faces"] >= 6
    exit_code, summary = _run(str(root / "notes.txt"), "-o", str(tmp_path / "out"))
    assert exit_code == 1 and "not a video or image file name (.txt" in summary["videos"][0]["error"]


def test_a_glob_that_matches_nothing_fails_with_the_reason(nest, tmp_path):
    root, _ = nest
    result = CliRunner().invoke(main, ["run", str(root), "--glob", "*.mkv", "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert f"no inputs found under {root}" in result.output and "'*.mkv'" in result.output and ".mp4" in result.output


def test_every_output_file_gets_the_umask_mode(nest):
    root, _ = nest
    umask = os.umask(0)
    os.umask(umask)
    files = [p for p in (root / "out").rglob("*") if p.is_file()]
    assert {p.relative_to(root / "out").parts[0] for p in files} >= {"annotated", "manifest", "job.json", "faces"}
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {p.name: oct(0o666 & ~umask) for p in files}


def test_a_video_whose_annotated_video_cannot_be_written_keeps_its_rows(local_ray, tmp_path):
    clip, out = str(shared("videos/two_faces.mp4")), tmp_path / "out"
    assert _run(clip, "-o", str(out), "--no-annotate")[0] == 0
    faces = _count(out, "SELECT count(*) FROM faces")[0][0]
    (out / "annotated" / "two_faces.mp4").mkdir(parents=True)  # the annotated video cannot be written there
    exit_code, summary = _run(clip, "-o", str(out))  # redone: annotation was not asked for before
    video = summary["videos"][0]
    assert exit_code == 1 and video["status"] == "complete" and video["error"].startswith("annotated video: ")
    assert _count(out, "SELECT count(*) FROM faces")[0][0] == faces == video["faces"]  # this run's rows, kept
    assert _count(out, "SELECT status, error FROM videos") == [("complete", video["error"])]
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.part")) and not (out / ".staging").exists()
    (out / "annotated" / "two_faces.mp4").rmdir()
    exit_code, summary = _run(clip, "-o", str(out))  # a rerun makes the annotated video
    assert exit_code == 0 and summary["videos"][0]["status"] == "complete" and summary["videos"][0]["error"] is None
    assert (out / "annotated" / "two_faces.mp4").is_file()


def test_a_unit_that_fails_to_publish_fails_its_video_alone(local_ray, tmp_path):
    """The unit finishing a video raises while publishing it (a file stands where its frames partition goes,
    after its faces part moved into place): that video fails with the reason and shows no row, the other
    video completes."""
    clips = [str(shared("videos/two_faces.mp4")), str(shared("videos/single_face.mp4"))]
    out, blocked = tmp_path / "out", video_id(Path(clips[0]))
    (out / "frames").mkdir(parents=True)
    (out / "frames" / f"video_id={blocked}").write_text("not a folder")
    exit_code, summary = _run(*clips, "-o", str(out), "--no-annotate")
    videos = {Path(v["path"]).name: v for v in summary["videos"]}
    assert exit_code == 1 and videos["single_face.mp4"]["status"] == "complete"
    failed = videos["two_faces.mp4"]
    assert failed["status"] == "failed" and failed["error"].startswith(clips[0]), failed
    assert f"frames/video_id={blocked}" in failed["error"]
    assert not list(out.glob(f"*/video_id={blocked}/*.parquet"))  # the faces part published first is gone
    assert sorted(_count(out, "SELECT status FROM videos")) == [("complete",), ("failed",)]
    assert _count(out, "SELECT DISTINCT video_id FROM faces") == [(videos["single_face.mp4"]["video_id"],)]


def _emoray_run(out: Path, *args: str, log: Path, stdout_too: bool = False) -> subprocess.Popen:
    """``emoray run`` in its own process group (and so its own embedded Ray) on the shared clips; its
    stderr (and with ``stdout_too`` its stdout, where Ray prints its workers' errors) goes to ``log``."""
    env = os.environ | {"RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir="/tmp")}  # socket paths < 107 bytes
    command = [sys.executable, "-m", "pipeline.cli", "run", *[str(shared(f"videos/{n}")) for n in args],
               "-o", str(out), "--no-annotate"]
    with open(log, "w") as handle:
        return subprocess.Popen(command, env=env, start_new_session=True, stderr=handle,
                                stdout=handle if stdout_too else subprocess.DEVNULL)


def _wait_for(condition, process: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, "the run ended early"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _ray_processes(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True)
            if "ray" in " ".join(p.cmdline()) or p.name().startswith(("ray::", "raylet", "gcs_server"))]


def _gone_within(processes: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=seconds)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    return alive


@pytest.fixture(scope="module")
def stopped_run(local_ray, tmp_path_factory):
    """A run of three clips into OUT; a second run into OUT meanwhile; SIGTERM after the first video."""
    out, log = tmp_path_factory.mktemp("stopped") / "out", tmp_path_factory.mktemp("logs") / "run.log"
    process = _emoray_run(out, "two_faces.mp4", "WolfgangLanger_Pexels.mp4", "face_noface.mov", log=log)
    try:
        _wait_for(lambda: (out / ".emoray.lock").exists() and (out / ".emoray.lock").read_text().strip(), process)
        second = CliRunner().invoke(main, ["run", str(shared("videos/no_face.mp4")), "-o", str(out)])
        _wait_for(lambda: list((out / "manifest").glob("*.json")), process)
        ray_processes = _ray_processes(process.pid)
        command_lines = [" ".join(p.cmdline()) for p in ray_processes]
        listening = {(c.laddr.ip, p.name()) for p in ray_processes + [psutil.Process(process.pid)]
                     for c in _connections(p) if c.status == psutil.CONN_LISTEN}
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        leftovers = _gone_within(ray_processes, 15)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return {"out": out, "pid": process.pid, "exit_code": process.returncode, "stderr": log.read_text(),
            "second": second, "listening": listening, "leftovers": leftovers, "command_lines": command_lines}


def _connections(process: psutil.Process) -> list:
    with contextlib.suppress(psutil.Error):
        return process.net_connections(kind="inet")
    return []


def test_a_second_run_into_the_same_folder_exits_at_once_naming_the_first(stopped_run):
    second = stopped_run["second"]
    assert second.exit_code == 1
    assert f"another emoray run is writing {stopped_run['out']} (pid {stopped_run['pid']})" in second.output
    # and it did no work: nothing of its input, no_face.mp4, is in OUT
    names = [Path(json.loads(p.read_text())["path"]).name for p in (stopped_run["out"] / "manifest").glob("*.json")]
    assert names and "no_face.mp4" not in names


def test_sigterm_keeps_finished_videos_publishes_no_partial_one_and_exits_143(stopped_run):
    out, stderr = stopped_run["out"], stopped_run["stderr"]
    assert stopped_run["exit_code"] == 143, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("emoray: stopped by SIGTERM: "), stderr
    # the first video or two finished before the signal landed (the fixture looks at the processes first)
    complete = int(lines[0].removeprefix("emoray: stopped by SIGTERM: ").split()[0])
    assert 1 <= complete < 3 and f"{3 - complete} unfinished" in lines[0], lines[0]
    manifests = {p.stem: json.loads(p.read_text()) for p in (out / "manifest").glob("*.json")}
    assert [m["status"] for m in manifests.values()] == ["complete"] * complete
    published = {p.parent.name.removeprefix("video_id=") for p in out.glob("f*/video_id=*/*.parquet")}
    assert published == set(manifests)
    assert json.loads((out / "job.json").read_text())["summary"]["stopped_by"] == "SIGTERM"


def test_the_embedded_ray_listens_on_loopback_only_and_ends_with_the_driver(stopped_run):
    assert stopped_run["listening"], "no listening socket seen"
    assert {ip for ip, _ in stopped_run["listening"]} <= set(LOOPBACK), stopped_run["listening"]
    assert stopped_run["leftovers"] == []
    assert "Token authentication" not in stopped_run["stderr"]


def test_the_embedded_ray_starts_no_dashboard_nor_autoscaler_and_a_small_object_store(stopped_run):
    commands = stopped_run["command_lines"]
    assert any("raylet" in command for command in commands), commands
    assert not [c for c in commands if "dashboard/dashboard.py" in c or "autoscaler/_private/monitor.py" in c]
    raylet = next(c for c in commands if "raylet/raylet" in c)
    assert "--object_store_memory=268435456" in raylet  # 256 MB at the defaults, not 30% of the memory


def test_ctrl_c_stops_a_run_cleanly_with_exit_130_and_one_line(local_ray, tmp_path):
    """Ctrl-C in a terminal signals the whole process group: the driver and the Ray processes it started."""
    out = tmp_path / "out"
    process = _emoray_run(out, "WolfgangLanger_Pexels.mp4", "face_noface.mov", "no_face.mp4",
                          log=tmp_path / "run.log", stdout_too=True)
    try:
        _wait_for(lambda: list((out / ".staging").glob("*/frames.parquet")), process)  # rows are being written
        os.killpg(process.pid, signal.SIGINT)
        process.wait(60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    output = (tmp_path / "run.log").read_text()
    assert process.returncode == 130, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "stopped by SIGINT: 0 videos complete" in lines[0], output  # no "(raylet) Task ..."
    assert not list(out.glob("f*/video_id=*/*.parquet")) and not list((out / "manifest").glob("*.json"))


def test_once_a_stop_is_requested_nothing_ray_forwards_from_its_workers_is_shown(local_ray, capfd):
    """What a stopped run would end with above its one line: what Ray forwards from the tasks and actors
    being stopped ("(raylet) Task ModelsActor.classify failed ... infinite retries"), as a run wires it."""
    import ray

    from jobs.cluster import show_worker_output, silence_worker_output
    from pipeline.stopping import StopRequest

    @ray.remote
    def chatty(word: str) -> None:
        for _ in range(3):
            print(f"worker says {word}", flush=True)
            time.sleep(0.2)

    def shown(word: str) -> bool:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # Ray forwards worker output every few hundred ms
            if f"worker says {word}" in capfd.readouterr().out:
                return True
            time.sleep(0.25)
        return False

    ray.get(chatty.remote("before"))
    assert shown("before")  # forwarding works here: what follows can fail
    stop = StopRequest()
    stop.call_when_set(silence_worker_output)
    try:
        stop.set(signal.SIGINT)
        ray.get(chatty.remote("after"))
        assert not shown("after")
    finally:
        show_worker_output()  # this test process's Ray goes on for other tests
