"""``emoray submit|status|logs|stop`` on a real two-node Ray cluster on 127.0.0.1 with token auth.

The client runs as a user would: ``python -m pipeline.cli`` in a shell whose HOME holds the
cluster's token and which exports no Ray variable. The tests run in order and share the cluster;
the last one kills the worker node.
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

import numpy as np
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest

from tests.cluster.nodes import LocalCluster
from tests.conftest import shared
from tests.s3 import serving

# decoded frames; the 169-frame clip keeps a job busy long enough to be stopped half-way (the others take ~1 s)
CLIPS = {"two_faces.mp4": 56, "three_faces_walking.mp4": 41, "single_face.mp4": 72, "face_noface.mov": 169}
TIMEOUT = 300
BUCKET = "bucket"


@pytest.fixture(scope="module")
def clips() -> list[str]:
    return [str(shared(f"videos/{name}")) for name in CLIPS]


@pytest.fixture(scope="module")
def s3():
    """An S3 server whose endpoint the cluster's nodes (started after it) have in their environment."""
    with serving(BUCKET) as server:
        yield server


@pytest.fixture(scope="module")
def cluster(s3):
    root = Path(tempfile.mkdtemp(prefix="emoray-cluster-", dir="/tmp"))
    cluster = LocalCluster(root)
    try:
        cluster.start_head(num_cpus=2)
        cluster.add_node(num_cpus=2)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def clean_run(clips, tmp_path_factory) -> Path:
    """The reference: plain ``emoray run`` on an embedded local Ray, in its own process."""
    out = tmp_path_factory.mktemp("clean") / "out"
    ray_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": ray_dir}
    try:
        result = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", *clips, "-o", str(out), "--no-annotate"],
                                env=env, capture_output=True, text=True, timeout=TIMEOUT)
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def emoray(cluster: LocalCluster, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """The CLI against the test cluster, from a directory of its own (so the job cannot see this checkout)."""
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args, "--address", cluster.dashboard],
                          env=cluster.client_env(), cwd=cluster.root, capture_output=True, text=True, timeout=timeout)


def job_status(cluster: LocalCluster, job: str) -> dict:
    result = emoray(cluster, "status", job, "--json")
    return json.loads(result.stdout)


def read(out: Path, table: str):
    frame = ds.dataset(out / table, partitioning="hive").to_table().to_pandas()
    keys = ["video_id", "frame_index"] + (["face_index"] if table == "faces" else [])
    return frame.sort_values(keys).reset_index(drop=True), keys


def assert_same_results(out: Path, clean: Path, extra: dict[str, int] | None = None) -> None:
    """Same videos, same rows (no duplicates, nothing missing), same numbers, complete manifests; ``extra``:
    videos (name: frames) that ``out`` holds beside the clean run's, checked complete only."""
    extra = extra or {}
    for table in ("faces", "frames"):
        (got, keys), (want, _) = read(out, table), read(clean, table)
        assert not got.duplicated(keys).any(), f"duplicate {table} rows"
        assert set(want["video_id"]) <= set(got["video_id"])
        assert got["video_id"].nunique() <= want["video_id"].nunique() + len(extra)
        got = got[got["video_id"].isin(set(want["video_id"]))].reset_index(drop=True)
        assert len(got) == len(want) > 0, table
        numeric = [c for c in want.columns if want[c].dtype.kind in "fi"]
        np.testing.assert_allclose(got[numeric].to_numpy(float), want[numeric].to_numpy(float), atol=1e-3)
    frames, _ = read(out, "frames")
    names = set()
    for video_id, rows in frames.groupby("video_id"):
        manifest = json.loads((out / "manifest" / f"{video_id}.json").read_text())
        assert manifest["status"] == "complete" and manifest["counts"]["frames"] == len(rows)
        assert list(rows["frame_index"]) == list(range(len(rows)))  # every frame once, in order
        names.add(Path(manifest["path"]).name)
        assert (CLIPS | extra)[Path(manifest["path"]).name] == len(rows)
    assert set(extra) <= names
    assert not list(out.rglob("*.tmp"))


def wait_for(condition, *, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_submit_wait_gives_the_outputs_of_run_with_work_on_both_nodes(cluster, clips, clean_run, tmp_path):
    out = tmp_path / "out"
    result = emoray(cluster, "submit", *clips, "-o", str(out), "--wait")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    job = result.stdout.splitlines()[0]
    assert job.startswith("raysubmit_") and "complete" in result.stdout and f"job {job}: SUCCEEDED" in result.stderr
    assert_same_results(out, clean_run)
    assert {p.name for p in (out / "annotated").iterdir()} == {Path(c).with_suffix(".mp4").name for c in clips}

    status = job_status(cluster, job)
    assert status["status"] == "SUCCEEDED" and status["exit_code"] == 0 and status["output"] == str(out)
    tasks = cluster.tasks(status["ray_job_id"])
    segment_nodes = {t["node_id"] for t in tasks if t["name"] == "process_segment" and t["state"] == "FINISHED"}
    assert segment_nodes == {node.node_id for node in cluster.nodes}, "decoding did not spread over both nodes"
    logs = emoray(cluster, "logs", job)
    assert logs.returncode == 0 and "emoray run" in logs.stdout and "two_faces.mp4" in logs.stdout


def test_run_with_the_address_of_a_token_cluster_needs_no_export(cluster, tmp_path):
    photo = str(shared("photos/multi_face.jpg"))
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", photo, "-o", str(tmp_path / "out"), "--json",
                             "--no-annotate", "--address", cluster.gcs_address], env=cluster.client_env(),
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    video = json.loads(result.stdout[result.stdout.index("{"):])["videos"][0]
    assert video["status"] == "complete" and video["frames"] == 1 and video["faces"] >= 4


def test_a_stopped_job_resubmitted_equals_a_clean_run(cluster, clips, clean_run, tmp_path):
    out = tmp_path / "out"
    slow = {"WolfgangLanger_Pexels.mp4": 472}  # 20 s of video: the job is still busy when the stop comes
    command = ["submit", *clips, *(str(shared(f"videos/{name}")) for name in slow), "-o", str(out), "--no-annotate"]
    submitted = emoray(cluster, *command)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    job = submitted.stdout.strip()
    wait_for(lambda: list((out / "manifest").glob("*.json")), timeout=TIMEOUT, what="the first complete video")
    stopped = emoray(cluster, "stop", job)
    assert stopped.returncode == 0 and f"job {job}: STOPPED" in stopped.stdout, stopped.stdout + stopped.stderr
    done_before = len(list((out / "manifest").glob("*.json")))
    assert 1 <= done_before < len(clips) + len(slow), "the job was not stopped half-way"
    assert emoray(cluster, "status", job).returncode == 1  # a stopped job is not a success

    rerun = emoray(cluster, *command, "--json", "--wait")
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    summary = json.JSONDecoder().raw_decode(rerun.stdout[rerun.stdout.index("\n{\n") + 1:])[0]  # amid Ray's log lines
    statuses = sorted(v["status"] for v in summary["videos"])
    assert statuses.count("skipped") == done_before
    assert statuses.count("complete") == len(clips) + len(slow) - done_before
    assert_same_results(out, clean_run, extra=slow)


def test_a_job_survives_losing_a_worker_node_with_a_video_unit_on_it(cluster, clips, clean_run, s3, tmp_path):
    """Into an object store, videos are finished on both nodes (a unit host on each); the worker is killed
    while its host holds an unfinished video: that video starts again on a host on the head (and any segment
    lost with the node is redone there), and its rows appear once, complete."""
    head, worker = cluster.nodes
    out = f"s3://{BUCKET}/node-loss"
    submitted = emoray(cluster, "submit", *clips, "-o", out, "--no-annotate")
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    job = submitted.stdout.strip()
    ray_job = wait_for(lambda: job_status(cluster, job)["ray_job_id"], timeout=60, what="the driver to start")

    seen = []

    def unfinished_video_on_worker():
        tasks = cluster.tasks(ray_job)
        seen[:] = sorted({(t["name"], t["state"], t["node_id"] == worker.node_id) for t in tasks})
        mine = [t for t in tasks if t["node_id"] == worker.node_id and t["state"] == "FINISHED"]
        return sum(t["name"] == "UnitHost.start" for t in mine) > sum(t["name"] == "UnitHost.publish" for t in mine)

    try:
        wait_for(unfinished_video_on_worker, timeout=TIMEOUT, what="an unfinished video's unit on the worker")
    except AssertionError as error:
        raise AssertionError(f"{error}; tasks (name, state, on the worker): {seen}") from None
    killed = time.monotonic()
    cluster.kill(worker)
    wait_for(lambda: worker.node_id not in cluster.node_ids(), timeout=60, what="Ray to see the node dead")
    noticed = time.monotonic() - killed

    finished = emoray(cluster, "logs", job, "--follow")
    recovered = time.monotonic() - killed
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    assert "SUCCEEDED" in finished.stderr
    local = tmp_path / "downloaded"
    pafs.copy_files(f"{BUCKET}/node-loss", str(local), source_filesystem=s3.filesystem(),
                    destination_filesystem=pafs.LocalFileSystem())
    assert_same_results(local, clean_run)
    tasks = cluster.tasks(ray_job)
    lost = [t for t in tasks if t["node_id"] == worker.node_id and t["state"] == "FAILED"]
    assert lost, "the kill hit no work in flight"
    for task in (t for t in lost if t["name"] == "process_segment"):
        assert any(t["name"] == task["name"] and t["attempt"] > task["attempt"] and t["state"] == "FINISHED"
                   and t["node_id"] == head.node_id for t in tasks), "a lost segment was not redone on the head"
    starts = [t for t in tasks if t["name"] == "UnitHost.start" and t["state"] == "FINISHED"]
    assert len(starts) > len(clips), "the video of the lost unit was not started again"
    print(f"\nnode death noticed after {noticed:.1f} s; job finished {recovered:.1f} s after the kill")
