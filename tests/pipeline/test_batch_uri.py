"""``emoray run`` with object-store URIs for inputs and output, against a real S3 server on 127.0.0.1 (moto).

The endpoint reaches emoray, its Ray workers and pyarrow as it reaches any S3 client: ``AWS_ENDPOINT_URL``
in the environment (set before this module's Ray starts, so its workers inherit it). A job into the store,
resumed, queried and reported; then the store cut off in the middle of a job (``tests.s3.Gate``) and a rerun.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.sources.file import iter_frames
from tests.conftest import shared
from tests.s3 import Gate, S3Server, serving

CLIPS = ["two_faces.mp4", "three_faces_walking.mp4"]
BUCKET = "bucket"


@pytest.fixture(scope="module")
def s3():
    """The S3 server, with recordings/ holding the clips (one in a subfolder), and its endpoint in the
    environment of this process and of the Ray it then starts."""
    with serving(BUCKET) as server:
        filesystem = server.filesystem()
        for name, key in ((CLIPS[0], CLIPS[0]), (CLIPS[1], f"day2/{CLIPS[1]}")):
            with filesystem.open_output_stream(f"{BUCKET}/recordings/{key}") as handle:
                handle.write(shared(f"videos/{name}").read_bytes())
        yield server


@pytest.fixture(scope="module")
def s3_ray(s3):
    import ray

    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, _temp_dir=temp_dir)
    yield
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def input_cache():
    """Leave the node's input cache ($EMORAY_HOME, shared with the user) as it was found."""
    from jobs.storage import cache_dir

    before = set(cache_dir().iterdir()) if cache_dir().exists() else set()
    yield
    for path in set(cache_dir().iterdir()) - before if cache_dir().exists() else ():
        path.unlink(missing_ok=True)


def _run(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(main, ["run", *args, "--json"], catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout[result.stdout.index("{"):])


def _read(s3: S3Server, key: str) -> bytes:
    with s3.filesystem().open_input_stream(f"{BUCKET}/{key}") as handle:
        return handle.read()


def _rows(filesystem: pafs.FileSystem, root: str, table: str):
    frame = ds.dataset(f"{root}/{table}", filesystem=filesystem, partitioning="hive").to_table().to_pandas()
    keys = {"faces": ["video_id", "frame_index", "face_index"], "frames": ["video_id", "frame_index"]}.get(
        table, ["video_id", "track_id"])
    return frame.sort_values(keys).reset_index(drop=True)


def test_a_job_into_the_store_completes_resumes_and_is_queried_and_reported(s3, s3_ray, input_cache, tmp_path):
    inputs, out = f"s3://{BUCKET}/recordings", f"s3://{BUCKET}/results"
    exit_code, summary = _run(inputs, "-o", out)
    assert exit_code == 0, summary
    videos = {Path(v["path"]).name: v for v in summary["videos"]}
    assert videos[CLIPS[1]]["path"] == f"{inputs}/day2/{CLIPS[1]}" and all(v["status"] == "complete" for v in videos.values())
    for name, video in videos.items():
        decoded = sum(1 for _ in iter_frames(shared(f"videos/{name}")))
        manifest = json.loads(_read(s3, f"results/manifest/{video['video_id']}.json"))
        assert manifest["status"] == "complete" and manifest["counts"]["frames"] == decoded == video["frames"]
        assert set(manifest["outputs"]) == {"faces", "frames", "tracks", "episodes", "persons", "annotated"}
        assert all(uri.startswith(f"{out}/") for uri in manifest["outputs"].values())
        annotated = tmp_path / f"{name}.mp4"
        annotated.write_bytes(_read(s3, manifest["outputs"]["annotated"].removeprefix(f"s3://{BUCKET}/")))
        with av.open(str(annotated)) as container:
            assert sum(1 for _ in container.decode(video=0)) == decoded
    faces = _rows(s3.filesystem(), f"{BUCKET}/results", "faces")
    assert faces.groupby("video_id").size().to_dict() == {v["video_id"]: v["faces"] for v in videos.values()}
    names = [info.path for info in s3.filesystem().get_file_info(pafs.FileSelector(f"{BUCKET}/results", recursive=True))]
    assert f"{BUCKET}/results/annotated/day2/{CLIPS[1]}" in names and not [n for n in names if "/.staging" in n]
    assert json.loads(_read(s3, "results/job.json"))["summary"]["videos"] == 2

    exit_code, again = _run(inputs, "-o", out)
    assert exit_code == 0 and [v["status"] for v in again["videos"]] == ["skipped", "skipped"]

    counted = CliRunner().invoke(main, ["query", out, "SELECT video_id, count(*) AS n FROM faces GROUP BY 1",
                                        "--format", "json"])
    assert counted.exit_code == 0, counted.output
    assert {row["video_id"]: row["n"] for row in json.loads(counted.output)} == {v["video_id"]: v["faces"] for v in videos.values()}
    reported = CliRunner().invoke(main, ["report", out])
    assert reported.exit_code == 0 and reported.output.strip() == f"{out}/report.html", reported.output
    page = _read(s3, "results/report.html").decode()
    assert all(name in page for name in CLIPS) and "2 videos (2 complete, 0 failed)" in page


def test_the_store_cut_off_mid_job_fails_its_videos_cleanly_and_a_rerun_equals_a_local_run(s3, s3_ray, tmp_path):
    """The store goes away (connections refused) as soon as one video is published, while the other is still
    decoding (seconds of work left): that video fails naming the store, nothing of it is in the store, and
    once the store is back a rerun completes it with the rows of a run into a local folder."""
    clips = [str(shared("videos/single_face.mp4")), str(shared("videos/face_noface.mov"))]
    gate, out = Gate(s3.port), f"s3://{BUCKET}/flaky"
    command = [sys.executable, "-m", "pipeline.cli", "run", *clips, "-o", out, "--no-annotate", "--json"]
    ray_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    env = os.environ | s3.env(gate.endpoint) | {"RAY_TMPDIR": ray_dir}
    store = s3.filesystem()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not _manifests(store, "flaky") and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        gate.close()
        stdout, stderr = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert process.returncode == 1, stderr[-3000:]
    videos = json.loads(stdout[stdout.index("{"):])["videos"]
    (complete,) = [v for v in videos if v["status"] == "complete"]  # the one published before the cut
    (failed,) = [v for v in videos if v["status"] == "failed"]
    assert failed["error"].startswith(failed["path"]) and f"{out}/" in failed["error"], failed
    assert _manifests(store, "flaky") == [f"{complete['video_id']}.json"]
    assert not [path for path in _keys(store, "flaky") if failed["video_id"] in path]  # nothing of it, staged or not

    exit_code, rerun = _run(*clips, "-o", out, "--no-annotate")
    assert exit_code == 0 and {v["path"]: v["status"] for v in rerun["videos"]} == {
        complete["path"]: "skipped", failed["path"]: "complete"}, rerun
    local = tmp_path / "local"
    exit_code, _ = _run(*clips, "-o", str(local), "--no-annotate")
    assert exit_code == 0
    for table in ("faces", "frames", "tracks"):
        got, want = _rows(store, f"{BUCKET}/flaky", table), _rows(pafs.LocalFileSystem(), str(local), table)
        assert len(got) == len(want) > 0 and list(got.columns) == list(want.columns), table
        numeric = [c for c in want.columns if want[c].dtype.kind in "fi"]
        np.testing.assert_allclose(got[numeric].to_numpy(float), want[numeric].to_numpy(float), atol=1e-4)


def _keys(store: pafs.FileSystem, prefix: str) -> list[str]:
    selector = pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True)
    return [info.path for info in store.get_file_info(selector) if info.type == pafs.FileType.File]


def _manifests(store: pafs.FileSystem, prefix: str) -> list[str]:
    return sorted(Path(path).name for path in _keys(store, prefix) if "/manifest/" in path)


def test_an_unwritable_output_uri_fails_before_any_work(tmp_path):
    result = CliRunner().invoke(main, ["run", str(shared("videos/two_faces.mp4")), "-o", "file:///proc/emoray-out"])
    assert result.exit_code == 1 and "file:///proc/emoray-out: output location is not writable" in result.output
