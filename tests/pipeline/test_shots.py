"""Shot cuts from the decode pass, on real clips: a clip joined from the shared clips by hard cuts, and every
shared clip as it is (their only cut: face_noface.mov's, where a black frame separates the man from the title)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.shots import (CUT_THRESHOLD, SegmentShots, ShotCutter, frame_signature, image_signature,
                            shot_ids)
from pipeline.sources.file import iter_frames
from tests.conftest import shared
from tests.pipeline.media import joined_clip

# frame indexes where a new shot starts, checked by looking at the frames
SHARED_CLIP_CUTS = {
    "WolfgangLanger_Pexels.mp4": [],
    "single_face.mp4": [],
    "face_noface.mov": [72, 73],  # 72 is one black frame between the man and the animated title
    "no_face.mp4": [],  # the title blurs out at the end: a fade, not a cut
    "two_faces.mp4": [],
    "three_faces_walking.mp4": [],
}


@pytest.fixture(scope="module")
def aba(tmp_path_factory):
    """Woman (A), man (B), the woman again later in her clip (A): 50 frames each, joined by hard cuts."""
    woman, man = shared("videos/WolfgangLanger_Pexels.mp4"), shared("videos/single_face.mp4")
    return joined_clip(tmp_path_factory.mktemp("shots") / "aba.mp4", [(woman, 0, 50), (man, 0, 50), (woman, 200, 250)])


def cuts_of(path, *, segment_frames: int, sample_fps: float | None = None) -> list[int]:
    """Cuts as the batch path finds them: segment tasks of ``segment_frames`` frames, then the unit in order."""
    frames = list(iter_frames(path, sample_fps=sample_fps))
    cutter = ShotCutter()
    for start in range(0, len(frames), segment_frames):
        shots = SegmentShots()
        shots.add_frames(frames[start:start + segment_frames])
        cutter.update(shots.result())
    return cutter.cut_frames


@pytest.mark.parametrize("segment_frames", [1000, 50, 17])  # one segment; segments that start at the cuts; others
def test_every_hard_cut_is_found_at_its_frame_whichever_segment_holds_it(aba, segment_frames):
    path, cuts = aba
    assert cuts == [50, 100]
    assert cuts_of(path, segment_frames=segment_frames) == cuts


def test_with_sparse_frames_a_cut_starts_at_the_first_processed_frame_after_it(aba):
    path, _ = aba
    processed = [frame.index for frame in iter_frames(path, sample_fps=5)]
    first_after = [min(i for i in processed if i >= cut) for cut in (50, 100)]
    assert cuts_of(path, segment_frames=8, sample_fps=5) == first_after


@pytest.mark.parametrize("name", sorted(SHARED_CLIP_CUTS))
def test_no_false_cut_in_a_shared_clip(name):
    path = shared(f"videos/{name}")
    assert cuts_of(path, segment_frames=40) == SHARED_CLIP_CUTS[name]
    assert cuts_of(path, segment_frames=40, sample_fps=2) == sorted({  # the first processed frame at or after each cut
        min(f.index for f in iter_frames(path, sample_fps=2) if f.index >= cut) for cut in SHARED_CLIP_CUTS[name]})


def test_live_mode_frame_by_frame_gives_the_same_cuts_and_times(aba):
    path, _ = aba
    cutter = ShotCutter()
    starts = [frame.index for frame in iter_frames(path)
              if cutter.update_frame(frame.index, frame.pts_time, frame_signature(frame))]
    assert starts == cutter.cut_frames == [50, 100]
    np.testing.assert_allclose(cutter.cut_times, [50 / 24, 100 / 24], atol=1e-3)


def test_a_signature_of_the_detector_frame_scores_like_the_decoded_frame(aba):
    path, _ = aba
    frames = [frame for frame in iter_frames(path) if frame.index in (48, 49, 50)]
    decoded = [frame_signature(frame) for frame in frames]
    resized = [image_signature(frame.to_rgb(0, (480, 270))) for frame in frames]
    assert decoded[0].shape == (18, 32, 3) and decoded[0].dtype == np.uint8 and decoded[0].nbytes == 1728
    for signatures in (decoded, resized):
        shots = SegmentShots()
        for frame, signature in zip(frames, signatures):
            shots.add(frame.index, frame.pts_time, signature)
        score = shots.result().score
        assert np.isnan(score[0]) and score[1] < CUT_THRESHOLD / 3 and score[2] > CUT_THRESHOLD * 1.5


def test_shot_ids_count_the_cuts_before_each_frame():
    np.testing.assert_array_equal(shot_ids(np.arange(0, 150, 25), [50, 100]), [0, 0, 1, 1, 2, 2])
