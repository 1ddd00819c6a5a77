"""``emoray`` under hostile use, third round: NaN options, damaged outputs, long names, unwritable folders,
spoofing names, strings where lists belong.

Real files and real runs on a real local Ray (one per module); the clips are the shortest shared ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobs.spec import OptionError
from pipeline.api import live, run_batch
from pipeline.cli import main
from tests.conftest import shared

CLIP = "videos/two_faces.mp4"  # 56 frames, 4.7 s


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
