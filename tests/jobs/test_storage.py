"""Object-store URIs through pyarrow filesystems, exercised with ``file://`` URIs (pyarrow's LocalFileSystem).

S3 and GCS go through the same pyarrow calls but cannot be reached from the test machines.
"""

from __future__ import annotations

import shutil
from contextlib import nullcontext as does_not_raise
from pathlib import Path

import pytest

from jobs import storage
from jobs.discover import MEDIA_EXTENSIONS, discover, video_id
from jobs.manifest import file_records, redo_reason
from pipeline.errors import VideoError
from tests.conftest import shared


@pytest.mark.parametrize("path, expected", [
    ("s3://bucket/videos", True), ("gs://bucket/a.mp4", True), ("file:///data/in", True),
    ("s3://bucket/x?endpoint_override=http://127.0.0.1:9000", True),
    ("/data/in", False), ("relative/dir", False), ("C:/videos", False), ("a:b.mp4", False),
])
def test_is_uri(path, expected):
    assert storage.is_uri(path) is expected


def test_join_keeps_the_query():
    assert storage.join("s3://b/out?endpoint_override=x", "faces/p.parquet") == "s3://b/out/faces/p.parquet?endpoint_override=x"
    assert storage.join("file:///tmp/out/", "/job.json") == "file:///tmp/out/job.json"


@pytest.fixture
def tree(tmp_path) -> Path:
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(shared("videos/two_faces.mp4"), tmp_path / "a" / "b" / "clip.mp4")
    shutil.copy(shared("videos/three_faces_walking.mp4"), tmp_path / "a" / "walk.MOV")
    (tmp_path / "a" / "notes.txt").write_text("not media")
    shutil.copy(shared("videos/two_faces.mp4"), tmp_path / "a" / ".partial.mp4")
    return tmp_path


def test_a_uri_folder_is_discovered_like_the_same_folder_on_disk(tree):
    uri = f"file://{tree}/a"
    found = discover([uri]).inputs
    assert found == [(f"{uri}/b/clip.mp4", Path("b/clip.mp4")), (f"{uri}/walk.MOV", Path("walk.MOV"))]
    assert [relative for _, relative in found] == [relative for _, relative in discover([tree / "a"]).inputs]
    assert discover([uri], glob="*.mp4").inputs == found[:1]
    assert discover([f"{uri}/walk.MOV"]).inputs == [(f"{uri}/walk.MOV", Path("walk.MOV"))]
    assert storage.list_media(f"file://{tree}/none", MEDIA_EXTENSIONS) == []
    missing = discover([f"file://{tree}/none", uri, str(tree)])
    assert missing.refused == [(f"file://{tree}/none", f"file://{tree}/none: no such file or directory")]
    assert discover([uri], output=f"{uri}/b").inputs == found[1:]  # nothing under the output URI


def test_a_uri_has_the_content_id_of_the_file(tree):
    path = tree / "a" / "b" / "clip.mp4"
    assert video_id(f"file://{path}") == video_id(path)


def test_local_copy_downloads_once_and_again_when_the_object_changes(tree, tmp_path):
    source = tree / "a" / "b" / "clip.mp4"
    cache = tmp_path / "cache"
    first = storage.local_copy(f"file://{source}", directory=cache)
    assert first.read_bytes() == source.read_bytes() and first.suffix == ".mp4"
    before = first.stat().st_ino  # a new download would be a new file, renamed into place
    assert storage.local_copy(f"file://{source}", directory=cache) == first and first.stat().st_ino == before
    source.write_bytes(source.read_bytes()[:1000])
    assert storage.local_copy(f"file://{source}", directory=cache).stat().st_size == 1000
    with pytest.raises(storage.StorageError, match="no such object"):
        storage.local_copy(f"file://{tree}/missing.mp4", directory=cache)


def test_the_input_cache_keeps_the_most_recently_used_copies_within_its_cap(tree, tmp_path):
    cache, size = tmp_path / "cache", (tree / "a" / "b" / "clip.mp4").stat().st_size
    first = storage.local_copy(f"file://{tree}/a/b/clip.mp4", directory=cache, limit_bytes=size)
    second = storage.local_copy(f"file://{tree}/a/walk.MOV", directory=cache, limit_bytes=size)
    assert second.exists() and not first.exists()  # over the cap: the older copy went
    assert storage.local_copy(f"file://{tree}/a/b/clip.mp4", directory=cache, limit_bytes=10 * size).exists()
    assert second.exists()


def test_with_local_input_names_the_uri_in_errors(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("EMORAY_HOME", str(tmp_path / "emoray"))  # the copy goes into $EMORAY_HOME/cache/inputs

    @storage.with_local_input
    def fail(path: str) -> None:
        raise VideoError(f"{path}: truncated")

    uri = f"file://{tree}/a/b/clip.mp4"
    with pytest.raises(VideoError, match=f"^{uri}: truncated$"):
        fail(uri)
    with pytest.raises(VideoError, match="^/x.mp4: truncated$"):
        fail("/x.mp4")


def test_the_store_uploads_whole_files_and_reads_manifests(tmp_path):
    uri = f"file://{tmp_path}/out"
    storage.check_writable(uri)
    store = storage.OutputStore(uri)
    try:
        staged = store.staging / "faces" / "video_id=1" / "part-0.parquet"
        staged.parent.mkdir(parents=True)
        staged.write_bytes(b"PAR1")
        assert store.publish(staged) == f"{uri}/faces/video_id=1/part-0.parquet" and not staged.exists()
        assert (tmp_path / "out" / "faces" / "video_id=1" / "part-0.parquet").read_bytes() == b"PAR1"
        manifest = store.staging / "manifest" / "1.json"
        assert store.read_json(manifest) is None
        store.write_json(manifest, {"status": "complete"})
        assert store.read_json(manifest) == {"status": "complete"}
        assert not list((tmp_path / "out").rglob("*.tmp"))
    finally:
        store.close()
    assert not store.staging.exists()


def test_manifest_outputs_are_checked_where_they_are(tmp_path):
    (tmp_path / "f").write_text("rows")
    outputs = {table: f"file://{tmp_path}/f" for table in ("faces", "frames", "tracks", "episodes")}
    manifest = {"status": "complete", "fingerprint": "x", "outputs": outputs, "files": file_records(outputs)}
    assert manifest["files"]["faces"] == {"bytes": 4, "sha256": None}  # an object's size, from its listing
    assert redo_reason(manifest, "x", annotate=False) is None
    (tmp_path / "f").write_text("rows, fewer")
    assert redo_reason(manifest, "x", annotate=False) == f"damaged: file://{tmp_path}/f is 11 bytes, 4 when it was published"
    (tmp_path / "f").write_text("rows")
    manifest["outputs"]["frames"] = f"file://{tmp_path}/gone"
    assert redo_reason(manifest, "x", annotate=False) == f"damaged: file://{tmp_path}/gone is missing"


@pytest.mark.parametrize("uri, expectation", [
    ("file:///proc/emoray-cannot-write-here", pytest.raises(storage.StorageError, match="not writable")),
    ("nosuchscheme://bucket/out", pytest.raises(storage.StorageError, match="cannot open this storage")),
    ("file:///tmp", does_not_raise()),
])
def test_an_unwritable_or_unknown_output_fails_before_any_work(uri, expectation):
    with expectation:
        storage.check_writable(uri)
