"""Option ranges: NaN, infinities and values outside the documented ranges are refused wherever options are made."""

from __future__ import annotations

import json
import math

import pytest

from jobs.spec import RANGES, JobSpec, LiveSourceOptions, ModelOptions, OptionError, RunOptions

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(("name", "value"), [
    ("smoothing_seconds", NAN), ("smoothing_seconds", INF), ("smoothing_seconds", -1.0),
    ("min_face", NAN), ("min_face", -INF), ("min_face", 1e9),
    ("min_episode_seconds", NAN), ("score_threshold", NAN), ("score_threshold", 1.5),
    ("det_size", 0), ("det_size", 1), ("det_size", 99_999_999), ("det_size", 640.5), ("det_size", NAN),
    ("batch_size", 0), ("batch_size", True), ("batch_size", 2.0),
    ("fps", NAN), ("fps", INF), ("fps", 0.0), ("fps", -5.0),
    ("segment_seconds", NAN), ("segment_seconds", 0.0),
    ("min_face", "40"),
])
def test_a_value_outside_its_range_is_refused_naming_the_option(name, value):
    with pytest.raises(OptionError) as refused:
        RunOptions(**{name: value})
    assert refused.value.name == name and str(refused.value).startswith(f"{name} must be ")
    assert isinstance(refused.value, ValueError)


@pytest.mark.parametrize("values", [
    {}, {"det_size": None, "fps": None}, {"det_size": 32, "fps": 1000, "min_face": 0, "smoothing_seconds": 0},
    {"det_size": 8192, "min_face": 40.5, "score_threshold": 1, "batch_size": 1024, "fps": 0.01},
])
def test_values_inside_the_ranges_are_taken(values):
    options = RunOptions(**values)
    assert all(getattr(options, name) == value for name, value in values.items())


def test_the_model_options_of_live_mode_are_checked_too():
    with pytest.raises(OptionError, match="min_face must be a number in \\[0, 8192\\] pixels, but got nan"):
        ModelOptions(min_face=NAN)


def test_a_job_spec_read_back_from_job_json_is_checked_as_when_it_was_made(tmp_path):
    spec = JobSpec(inputs=("a.mp4",), output=str(tmp_path), options=RunOptions(fps=5, det_size=None))
    (tmp_path / "job.json").write_text(json.dumps({"spec": spec.to_dict()}))
    assert JobSpec.from_dict(json.loads((tmp_path / "job.json").read_text())["spec"]) == spec
    tampered = spec.to_dict() | {"options": spec.options.to_dict() | {"smoothing_seconds": NAN}}
    (tmp_path / "job.json").write_text(json.dumps({"spec": tampered}))  # Python writes NaN as a bare NaN
    with pytest.raises(OptionError, match="smoothing_seconds"):
        JobSpec.from_dict(json.loads((tmp_path / "job.json").read_text())["spec"])


@pytest.mark.parametrize(("name", "value"), [("timeout", NAN), ("timeout", 0.0), ("backoff_max", INF),
                                             ("max_retries", -1), ("max_retries", 1.5)])
def test_live_source_options_are_checked(name, value):
    with pytest.raises(OptionError) as refused:
        LiveSourceOptions(**{name: value})
    assert refused.value.name == name


def test_every_range_is_finite_and_describes_itself():
    for name, values in RANGES.items():
        assert math.isfinite(values.low) and math.isfinite(values.high) and values.low < values.high, name
        assert values.describe().startswith(("a number in ", "an integer in ")), name
