"""``emoray`` under hostile use, third round: NaN options, damaged outputs, long names, unwritable folders,
spoofing names, strings where lists belong.

Real files and real runs on a real local Ray (one per module); the clips are the shortest shared ones.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from jobs.spec import OptionError
from pipeline.api import live, run_batch
from pipeline.cli import main
from pipeline.query import query
from tests.conftest import shared

CLIP = "videos/two_faces.mp4"  # 56 frames, 4.7 s
PHOTO = "photos/multi_face.jpg"  # one frame, several faces: the quickest input


@pytest.mark.parametrize(("command", "arguments", "option"), [
    ("run", ["--smoothing-seconds", "nan"], "--smoothing-seconds"),
    ("run", ["--min-face", "nan"], "--min-face"),
    ("run", ["--fps", "nan"], "--fps"),
    ("run", ["--fps", "inf"], "--fps"),
    ("run", ["--det-size", "99999999"], "--det-size"),
    ("run", ["--det-size", "0"], "--det-size"),
    ("run", ["--min-episode", "-inf"], "--min-episode"),
    ("run", ["--score-threshold", "NaN"], "--score-threshold"),
    ("submit", ["--smoothing-seconds", "nan"], "--smoothing-seconds"),
    ("live", ["--min-face", "nan"], "--min-face"),
    ("live", ["--roll-seconds", "inf"], "--roll-seconds"),
    ("live", ["--timeout", "nan"], "--timeout"),
])
def test_a_refused_number_is_a_usage_error_naming_the_option_before_any_work(tmp_path, command, arguments, option):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [command, str(shared(CLIP)), "-o", str(out), *arguments])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output
    assert not out.exists()


def test_run_batch_and_live_refuse_nan_before_any_work(tmp_path):
    with pytest.raises(OptionError, match="smoothing_seconds must be a number in \\[0, 3600\\] seconds, but got nan"):
        run_batch([shared(CLIP)], tmp_path / "out", smoothing_seconds=float("nan"))
    with pytest.raises(OptionError, match="min_face"):
        with live(shared(CLIP), min_face=float("nan")):
            pass
    with pytest.raises(OptionError, match="duration"):
        with live(shared(CLIP), duration=float("inf")):
            pass
    assert not (tmp_path / "out").exists()


def _run(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(main, ["run", *args, "--json"], catch_exceptions=False)
    assert "{" in result.stdout, result.output
    return result.exit_code, json.loads(result.stdout[result.stdout.index("{"):])


def _rows(out: Path, table: str) -> int:
    return query(out, f"SELECT count(*) FROM {table}").fetchall()[0][0]


def test_run_batch_takes_one_path_as_a_string_and_refuses_no_output(local_ray, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="output must be a folder or a URI, but got None"):
        run_batch(str(shared(PHOTO)), None)
    assert not (tmp_path / "None").exists()
    outcomes = run_batch(str(shared(PHOTO)), tmp_path / "out", annotate=False)  # not a scan of "/", "w", "o", ...
    assert [(o.path, o.status) for o in outcomes] == [(str(shared(PHOTO)), "complete")] and outcomes[0].faces >= 3


def test_a_rerun_redoes_a_video_whose_published_files_were_damaged_and_says_so(local_ray, tmp_path):
    out = tmp_path / "out"
    assert _run(str(shared(PHOTO)), "-o", str(out))[0] == 0
    faces, tracks = _rows(out, "faces"), _rows(out, "tracks")
    manifest = json.loads(next((out / "manifest").glob("*.json")).read_text())
    assert set(manifest["files"]) == set(manifest["outputs"]) == {"faces", "frames", "tracks", "episodes", "persons",
                                                                      "annotated"}
    part = Path(manifest["outputs"]["faces"])
    assert manifest["files"]["faces"]["bytes"] == part.stat().st_size
    damages = [("truncated", lambda: part.write_bytes(part.read_bytes()[: part.stat().st_size // 2]), "bytes, "),
               ("deleted", lambda: Path(manifest["outputs"]["tracks"]).unlink(), "is missing")]
    for what, harm, reason in damages:
        harm()
        exit_code, summary = _run(str(shared(PHOTO)), "-o", str(out))
        assert exit_code == 0 and summary["videos"][0]["status"] == "complete", what  # redone, not "already complete"
        assert (_rows(out, "faces"), _rows(out, "tracks")) == (faces, tracks), what
        [(status, redone)] = query(out, "SELECT status, redone_because FROM videos").fetchall()
        assert status == "complete" and redone.startswith("damaged: ") and reason in redone, (what, redone)


def test_two_live_sessions_into_one_output_keep_their_rows_apart(local_ray, tmp_path):
    out, clip = tmp_path / "out", shared("videos/three_faces_walking.mp4")  # 41 frames, 3 people
    for _ in range(2):  # the same file replayed twice: same video_id, frame indexes and track ids
        result = CliRunner().invoke(main, ["live", str(clip), "-o", str(out), "--emotion-model", "mini-xception"])
        assert result.exit_code == 0, result.output
    assert _run(str(shared(PHOTO)), "-o", str(out), "--no-annotate")[0] == 0  # and a batch video beside them

    def one(sql: str):
        return query(out, sql).fetchall()

    sessions = one("SELECT session_id, count(*) FROM frames GROUP BY 1 ORDER BY 1")
    assert [count for _, count in sessions] == [1, 41, 41] and sessions[0][0] == ""  # batch rows: ''
    faces = one("SELECT count(*) FROM faces")[0][0]
    assert one("SELECT count(*) FROM faces JOIN tracks USING (video_id, session_id, track_id)")[0][0] == faces
    assert one("SELECT count(*), count(DISTINCT (video_id, session_id, track_id)) FROM tracks")[0] == (
        one("SELECT count(DISTINCT (video_id, session_id, track_id)) FROM faces")[0][0],) * 2
    assert one("SELECT count(*) FROM episodes e JOIN tracks USING (video_id, session_id, track_id)")[0][0] == \
        one("SELECT count(*) FROM episodes")[0][0]


def test_a_file_name_of_255_bytes_gets_its_rows_and_an_annotated_video(local_ray, tmp_path):
    (tmp_path / "in").mkdir()
    longest = tmp_path / "in" / ("é" * 125 + ".jpeg")  # 255 bytes, as long as a name can be
    longest.symlink_to(shared(PHOTO))
    out = tmp_path / "out"
    exit_code, summary = _run(str(tmp_path / "in"), "-o", str(out))
    video = summary["videos"][0]
    assert exit_code == 0 and video["status"] == "complete" and video["error"] is None, video
    [annotated] = (out / "annotated").iterdir()
    assert annotated.name.startswith("é" * 100) and annotated.name.endswith(f"~{video['video_id'][:8]}.mp4")
    assert len(annotated.name.encode()) + len(".") + len(".") + 8 + len(".part") <= 255  # and its temporary name
    assert _rows(out, "faces") == video["faces"] >= 3
    assert not list(out.rglob("*.part"))


def _frozen(*paths: Path, recursive: bool = False) -> None:
    """Make ``paths`` unwritable, for root too (``chattr +i``: not even root may create files there)."""
    command = ["chattr", *(["-R"] if recursive else []), "+i", *map(str, paths)]
    if os.geteuid() != 0:
        command = ["chmod", *(["-R"] if recursive else []), "a-w", *map(str, paths)]
    if shutil.which(command[0]) is None or subprocess.run(command, capture_output=True).returncode:
        pytest.skip(f"{command[0]} cannot make a folder unwritable here")


def _thawed(*paths: Path) -> None:
    command = ["chattr", "-R", "-i"] if os.geteuid() == 0 else ["chmod", "-R", "u+w"]
    subprocess.run([*command, *map(str, paths)], capture_output=True)


def test_a_staging_folder_that_cannot_be_written_is_an_error_before_any_work(tmp_path):
    out = tmp_path / "out"
    (out / ".staging").mkdir(parents=True)
    _frozen(out / ".staging")
    try:
        result = CliRunner().invoke(main, ["run", str(shared(PHOTO)), "-o", str(out)])
    finally:
        _thawed(out / ".staging")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"emoray: {out / '.staging'}: output directory is not writable (" in result.output
    assert not (out / "manifest").exists()


def test_an_output_folder_made_unwritable_mid_run_fails_the_videos_it_stops_with_the_reason(local_ray, tmp_path, caplog):
    out = tmp_path / "out"

    def freeze_after_the_first_video(state: dict) -> None:
        if state["done"] >= 1 and not (out / "frozen").exists():
            (out / "frozen").touch()
            _frozen(out, recursive=True)

    try:
        outcomes = run_batch([shared(PHOTO), shared(CLIP)], out, annotate=False, on_progress=freeze_after_the_first_video)
    finally:
        _thawed(out)
    done, stopped = sorted(outcomes, key=lambda o: o.status != "complete")  # whichever finished first
    assert done.status == "complete" and _rows(out, "faces") == done.faces > 0
    assert stopped.status == "failed" and stopped.error.startswith(f"{stopped.path}: "), stopped.error
    assert "Operation not permitted" in stopped.error or "Permission denied" in stopped.error
    assert f"{out}: job.json not written (" in caplog.text  # said, not raised: the outcomes are returned


def test_an_input_folder_that_cannot_be_searched_fails_alone_with_the_reason(tmp_path):
    """In a process without the right to pass over permissions, as a user's shell has it (not root's)."""
    root = tmp_path / "in"
    (root / "locked").mkdir(parents=True)
    shutil.copy(shared(PHOTO), root / "a.jpg")
    shutil.copy(shared(PHOTO), root / "locked" / "b.jpg")
    (root / "locked").chmod(0)
    command = [sys.executable, "-m", "pipeline.cli", "run", str(root), "-o", str(tmp_path / "out"), "--no-annotate", "--json"]
    if os.geteuid() == 0:
        if shutil.which("capsh") is None:
            pytest.skip("capsh is not installed: root would read the locked folder anyway")
        command = ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c", shlex.join(command)]
    env = os.environ | {"RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir="/tmp")}  # its own embedded Ray
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    finally:
        (root / "locked").chmod(0o755)
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    videos = {Path(v["path"]).name: v for v in json.loads(result.stdout)["videos"]}
    assert videos["a.jpg"]["status"] == "complete"
    assert videos["locked"] == videos["locked"] | {
        "status": "failed", "error": f"{root / 'locked'}: cannot search this folder (Permission denied)"}


RLO = "\u202e"  # right-to-left override: "holiday<RLO>gpj.mp4" shows as "holiday4pm.jpg"


def _outside_isolates(page: str) -> str:
    """The page without what is isolated: <bdi> elements and U+2068 ... U+2069 runs."""
    return re.sub("\u2068.*?\u2069", "", re.sub(r"<bdi>.*?</bdi>", "", page, flags=re.S), flags=re.S)


def test_names_that_spoof_or_overflow_the_report_are_isolated_and_wrap(local_ray, tmp_path, chromium):
    from pipeline.html_report import COLORS

    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    (root / f"holiday{RLO}gpj.mp4").symlink_to(shared(CLIP))
    (root / ("a" * 236 + ".jpg")).symlink_to(shared(PHOTO))
    assert _run(str(root), "-o", str(out), "--no-annotate", "--report")[0] == 0
    page = (out / "report.html").read_text()
    assert RLO not in page and page.count("holiday[U+202E]gpj.mp4") >= 3  # the override shown, not obeyed
    assert "holiday" not in _outside_isolates(page) and "aaaa.jpg" not in _outside_isolates(page)
    dom, screenshot = chromium((out / "report.html").as_uri(), window_size=(1280, 420))
    picture = cv2.cvtColor(cv2.imread(str(screenshot)), cv2.COLOR_BGR2RGB)
    bar_colors = {tuple(int(color[i:i + 2], 16) for i in (1, 3, 5)) for color in COLORS.values()}
    runs = [np.all(picture == color, axis=2) for color in bar_colors]  # the index's share bars (the legend has dots)
    longest = max(_longest_run(row) for mask in runs for row in mask)
    assert longest >= 30, "no share bar on screen: a long name pushed the columns away"


def _longest_run(row: np.ndarray) -> int:
    padded = np.concatenate([[0], row.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return int((edges[1::2] - edges[::2]).max(initial=0))
