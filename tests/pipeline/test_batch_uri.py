"""``emoray run`` with object-store URIs for inputs and output, on a real local Ray.

``file://`` URIs take the object-store path (pyarrow filesystem listing, ranged reads for content
ids, a per-node download cache for decoding, staged uploads with the manifest last); S3 and GCS
use the same pyarrow calls but are not reachable from the test machines.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.sources.file import iter_frames
from tests.conftest import shared

CLIPS = ["two_faces.mp4", "three_faces_walking.mp4"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A 'bucket' folder: recordings/ with the clips (one in a subfolder)."""
    root = tmp_path_factory.mktemp("bucket")
    (root / "recordings" / "day2").mkdir(parents=True)
    shutil.copy(shared(f"videos/{CLIPS[0]}"), root / "recordings" / CLIPS[0])
    shutil.copy(shared(f"videos/{CLIPS[1]}"), root / "recordings" / "day2" / CLIPS[1])
    return root


def _run(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(main, ["run", *args, "--json"], catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout[result.stdout.index("{"):])


@pytest.fixture
def input_cache():
    """Leave the node's input cache ($EMORAY_HOME, shared with the user) as it was found."""
    from jobs.storage import cache_dir

    before = set(cache_dir().iterdir()) if cache_dir().exists() else set()
    yield
    for path in set(cache_dir().iterdir()) - before if cache_dir().exists() else ():
        path.unlink(missing_ok=True)


def test_uris_in_and_out_give_complete_outputs_in_the_store_and_resume(local_ray, store, input_cache):
    inputs, out = f"file://{store}/recordings", f"file://{store}/results"
    exit_code, summary = _run(inputs, "-o", out)
    assert exit_code == 0, summary
    videos = {Path(v["path"]).name: v for v in summary["videos"]}
    assert videos[CLIPS[1]]["path"] == f"{inputs}/day2/{CLIPS[1]}" and all(v["status"] == "complete" for v in videos.values())

    results = store / "results"
    for name, video in videos.items():
        decoded = sum(1 for _ in iter_frames(shared(f"videos/{name}")))
        frames = ds.dataset(results / "frames" / f"video_id={video['video_id']}").to_table()
        assert frames.num_rows == decoded == video["frames"]
        manifest = json.loads((results / "manifest" / f"{video['video_id']}.json").read_text())
        assert manifest["status"] == "complete" and manifest["probe"]["path"] == video["path"]
        assert set(manifest["outputs"]) == {"faces", "frames", "tracks", "episodes", "annotated"}
        assert all(uri.startswith(f"{out}/") for uri in manifest["outputs"].values())
        annotated = Path(manifest["outputs"]["annotated"].removeprefix("file://"))
        with av.open(str(annotated)) as container:
            assert sum(1 for _ in container.decode(video=0)) == decoded
    faces = ds.dataset(results / "faces", partitioning="hive").to_table().to_pandas()
    assert faces.groupby("video_id").size().to_dict() == {v["video_id"]: v["faces"] for v in videos.values()}
    assert (results / "annotated" / "day2" / CLIPS[1]).exists()
    assert json.loads((results / "job.json").read_text())["summary"]["videos"] == 2
    assert not list(results.rglob("*.tmp"))

    exit_code, again = _run(inputs, "-o", out)
    assert exit_code == 0 and [v["status"] for v in again["videos"]] == ["skipped", "skipped"]


def test_an_unwritable_output_uri_fails_before_any_work(store):
    result = CliRunner().invoke(main, ["run", f"file://{store}/recordings", "-o", "file:///proc/emoray-out"])
    assert result.exit_code == 1 and "file:///proc/emoray-out: output location is not writable" in result.output
