"""Manifests record each published file (size, SHA-256) and a rerun trusts a video only while its files match."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from jobs.manifest import COMPLETE, damage, file_records, redo_reason

TABLES = ("faces", "frames", "tracks", "episodes")


@pytest.fixture
def published(tmp_path) -> dict:
    """A complete manifest of four published files of 1000 bytes each."""
    outputs = {}
    for table in TABLES:
        path = tmp_path / table / "video_id=v" / "part-0.parquet"
        path.parent.mkdir(parents=True)
        path.write_bytes(bytes(range(200)) * 5)
        outputs[table] = str(path)
    return {"status": COMPLETE, "fingerprint": "f", "outputs": outputs, "files": file_records(outputs)}


def test_a_file_is_recorded_by_size_and_sha256(published):
    content = Path(published["outputs"]["faces"]).read_bytes()  # what `sha256sum` prints for it
    assert published["files"]["faces"] == {"bytes": 1000, "sha256": hashlib.sha256(content).hexdigest()}
    assert damage(published) is None and redo_reason(published, "f", annotate=False) is None


@pytest.mark.parametrize(("harm", "found"), [
    (lambda path: path.write_bytes(path.read_bytes()[:600]), "is 600 bytes, 1,000 when it was published"),
    (lambda path: path.write_bytes(b"\0" * 1000), "is not the file that was published (its SHA-256 differs)"),
    (lambda path: path.unlink(), "is missing"),
])
def test_a_truncated_changed_or_deleted_file_is_damage_named_by_its_path(published, harm, found):
    path = Path(published["outputs"]["tracks"])
    harm(path)
    assert damage(published) == f"{path} {found}"
    assert redo_reason(published, "f", annotate=False) == f"damaged: {path} {found}"


def test_a_manifest_that_recorded_no_files_is_not_trusted(published):
    del published["files"]
    assert "records no size and checksum" in redo_reason(published, "f", annotate=False)
    published["files"] = {"faces": {"bytes": 1000}}  # not every published file
    assert "records no size and checksum" in damage(published)


@pytest.mark.parametrize(("change", "reason"), [
    ({"status": "failed", "error": "x.mp4: truncated"}, "the earlier run failed: x.mp4: truncated"),
    ({"fingerprint": "g"}, "other models or options than the earlier run"),
])
def test_other_reasons_to_redo_are_said(published, change, reason):
    assert redo_reason(published | change, "f", annotate=False) == reason
    assert redo_reason(published, "f", annotate=True) == "the earlier run made no annotated video"
    assert redo_reason(None, "f", annotate=False) == "no earlier run finished it"
