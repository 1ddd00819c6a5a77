"""Discovery on real files: one extension rule for named and found files, no FIFO opened, output folders left out."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

from jobs.discover import discover, video_id
from tests.conftest import shared


def _discover_within(seconds: float, *args, **kwargs):
    """``discover`` in a thread: a FIFO opened by mistake would block it forever, failing the test instead."""
    result = {}
    thread = threading.Thread(target=lambda: result.update(found=discover(*args, **kwargs)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "discovery blocked (opened a FIFO?)"
    return result["found"]


def test_fifos_are_skipped_with_a_reason_not_opened(tmp_path):
    shutil.copy(shared("videos/two_faces.mp4"), tmp_path / "clip.mp4")
    os.mkfifo(tmp_path / "camera.mp4")
    found = _discover_within(10, [tmp_path])
    assert [str(relative) for _, relative in found.inputs] == ["clip.mp4"]
    assert found.skipped == [(tmp_path / "camera.mp4", f"{tmp_path / 'camera.mp4'}: not a regular file (a FIFO)")]
    named = _discover_within(10, [tmp_path / "camera.mp4"])
    assert named.inputs == [] and "not a regular file (a FIFO)" in named.refused[0][1]


def test_named_and_found_files_follow_the_same_extension_rule(tmp_path):
    shutil.copy(shared("videos/two_faces.mp4"), tmp_path / "clip.mp4")
    (tmp_path / "anim.gif").write_bytes(b"GIF89a")
    (tmp_path / "notes.txt").write_text("not media")
    in_folder = {str(relative) for _, relative in discover([tmp_path]).inputs}
    assert in_folder == {"clip.mp4", "anim.gif"}
    named = discover([tmp_path / "clip.mp4", tmp_path / "anim.gif", tmp_path / "notes.txt", tmp_path / "gone.mp4"])
    assert {str(relative) for _, relative in named.inputs} == in_folder
    reasons = dict(named.refused)
    assert "not a video or image file name (.txt" in reasons[tmp_path / "notes.txt"]
    assert reasons[tmp_path / "gone.mp4"].endswith("no such file or directory")


def test_output_folders_are_not_descended_into(tmp_path):
    shutil.copy(shared("videos/two_faces.mp4"), tmp_path / "clip.mp4")
    for folder in ("out", "old-results", "other"):
        (tmp_path / folder / "annotated").mkdir(parents=True)
        shutil.copy(tmp_path / "clip.mp4", tmp_path / folder / "annotated" / "clip.mp4")
    (tmp_path / "old-results" / "job.json").write_text(json.dumps({"spec": {}, "summary": {}}))
    (tmp_path / "other" / "job.json").write_text(json.dumps({"name": "someone else's job file"}))
    found = discover([tmp_path], output=tmp_path / "out")
    assert sorted(str(relative) for _, relative in found.inputs) == ["clip.mp4", "other/annotated/clip.mp4"]
    assert sorted(found.output_folders) == [tmp_path / "old-results", tmp_path / "out"]
    assert discover([tmp_path / "out"], output=Path(tmp_path / "out")).inputs == []


def test_discovery_recurses_filters_and_names_by_content(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(shared("videos/two_faces.mp4"), tmp_path / "a" / "b" / "clip.mp4")
    shutil.copy(shared("videos/two_faces.mp4"), tmp_path / "copy.MOV")
    (tmp_path / "notes.txt").write_text("not media")
    (tmp_path / ".hidden.mp4").write_bytes(b"")
    found = discover([tmp_path]).inputs
    assert [str(relative) for _, relative in found] == ["a/b/clip.mp4", "copy.MOV"]
    assert [str(r) for _, r in discover([tmp_path], glob="*.mp4").inputs] == ["a/b/clip.mp4"]
    assert video_id(tmp_path / "copy.MOV") == video_id(tmp_path / "a" / "b" / "clip.mp4") == video_id(shared("videos/two_faces.mp4"))
    assert video_id(shared("videos/no_face.mp4")) != video_id(shared("videos/two_faces.mp4"))
