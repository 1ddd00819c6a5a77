"""Keyframe-aligned segments on the real clips, and a video in many segments equal to one."""

from __future__ import annotations

import pyarrow.dataset as ds
import pytest

from jobs.spec import JobSpec, RunOptions
from pipeline.batch import BatchJob
from pipeline.sources.file import iter_frames, probe
from pipeline.sources.plan import plan_segments
from tests.conftest import shared


@pytest.mark.parametrize("name", ["WolfgangLanger_Pexels.mp4", "face_noface.mov"])
def test_segments_start_on_keyframes_and_together_decode_every_frame_once(name):
    path = shared(f"videos/{name}")
    segments = plan_segments(path, probe(path), segment_seconds=1.0)
    assert len(segments) > 3
    pieces = []
    for segment in segments:
        frames = list(iter_frames(path, start_time=segment.start_time, end_time=segment.end_time,
                                  first_index=segment.first_index))
        assert frames[0].frame.key_frame, segment
        pieces += [(f.index, round(f.pts_time, 6)) for f in frames]
    assert pieces == [(f.index, round(f.pts_time, 6)) for f in iter_frames(path)]


def test_short_videos_and_images_are_one_segment():
    assert len(plan_segments(shared("videos/two_faces.mp4"), probe(shared("videos/two_faces.mp4")), segment_seconds=60)) == 1
    photo = shared("photos/multi_face.jpg")
    assert len(plan_segments(photo, probe(photo), segment_seconds=0.01)) == 1


def test_a_video_in_many_segments_gives_the_same_results_as_in_one(local_ray, tmp_path):
    clip = str(shared("videos/WolfgangLanger_Pexels.mp4"))
    tables = {}
    for segment_seconds in (1.0, 60.0):
        out = tmp_path / f"out-{segment_seconds}"
        options = RunOptions(annotate=False, segment_seconds=segment_seconds, fps=8)
        outcome = BatchJob(JobSpec(inputs=(clip,), output=str(out), options=options)).run()[0]
        assert outcome.status == "complete", outcome.error
        tables[segment_seconds] = ds.dataset(out / "faces", partitioning="hive").to_table().to_pandas()
    many, one = tables[1.0], tables[60.0]
    assert len(many) == len(one) > 100
    assert (many["frame_index"].to_numpy() == one["frame_index"].to_numpy()).all()
    assert (many["track_id"].to_numpy() == one["track_id"].to_numpy()).all()  # tracks carry across segments
    assert abs(many["x1"] - one["x1"]).max() < 0.5
