"""Persons from real clips: an A-B-A clip joined from the shared clips by hard cuts, and the shared clips
whose people were counted by looking at their frames."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.spec import ModelOptions
from models.embedding import FaceEmbedder
from pipeline.inference import LocalModels
from pipeline.persons.identity import (MIN_TRACK_SECONDS, PersonRegistry, TrackAppearance, cluster_tracks,
                                       identity_switches, split_appearance, split_time)
from pipeline.persons.sampling import SAMPLES_PER_TRACK, Sample, TrackSamples, chip_candidates
from pipeline.persons.table import persons_table
from pipeline.shots import shot_ids
from pipeline.timeline import TimelineTotals
from tests.conftest import shared
from tests.pipeline.media import joined_clip
from tests.pipeline.persons_path import run_persons_path, run_segment

LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


@pytest.fixture(scope="module")
def models() -> LocalModels:
    return LocalModels(ModelOptions(device="cpu"))


@pytest.fixture(scope="module")
def embedder() -> FaceEmbedder:
    return FaceEmbedder()


@pytest.fixture(scope="module")
def aba(tmp_path_factory, models, embedder):
    """The woman (A) crying, the man (B), the woman again smiling 8 s later in her clip: 50 frames each at
    24 fps, joined by hard cuts at frames 50 and 100. Today's tracker alone makes 2 tracks of it: A's face
    comes back where it was, so her track crosses both cuts."""
    woman, man = shared("videos/WolfgangLanger_Pexels.mp4"), shared("videos/single_face.mp4")
    path, cuts = joined_clip(tmp_path_factory.mktemp("persons") / "aba.mp4",
                             [(woman, 0, 50), (man, 0, 50), (woman, 200, 250)])
    return run_persons_path(path, models, embedder), cuts


def test_aba_gives_three_tracks_none_across_a_cut_and_two_persons(aba):
    run, cuts = aba
    assert run.cut_frames == cuts == [50, 100]
    faces = run.faces
    assert len(faces) == 150 and len(np.unique(faces.track_id)) == 3
    shot = shot_ids(faces.face_frame, run.cut_frames)
    for track in np.unique(faces.track_id):
        assert len(np.unique(shot[faces.track_id == track])) == 1
    persons = cluster_tracks(run.appearances)
    by_shot = {int(shot[faces.track_id == a.track_id][0]): person for a, person in zip(run.appearances, persons)}
    assert by_shot == {0: 0, 1: 1, 2: 0}  # A's two appearances are one person, numbered in order of appearance


def test_each_track_embeds_a_bounded_few_of_its_faces_spread_over_it(aba):
    run, _ = aba
    for appearance in run.appearances:
        assert 1 <= len(appearance.times) <= SAMPLES_PER_TRACK
        assert appearance.start <= appearance.times.min() and appearance.times.max() <= appearance.end


def test_a_track_that_follows_a_box_into_another_persons_shot_is_split_there(aba):
    """What today's tracker does with A-B-A: one track through the cut. Its samples (A's, then B's) disagree."""
    run, _ = aba
    a, b = run.appearances[0], run.appearances[1]
    joined = TrackAppearance(a.track_id, a.start, b.end, np.r_[a.times, b.times], np.r_[a.embeddings, b.embeddings],
                             np.r_[a.quality, b.quality], 1.0)
    assert identity_switches(joined.embeddings) == [len(a.times)]
    assert identity_switches(a.embeddings) == [] and identity_switches(run.appearances[2].embeddings) == []
    faces = run.faces
    rows = np.flatnonzero(np.isin(faces.track_id, [a.track_id, b.track_id]))
    times = faces.pts_time[np.searchsorted(faces.frame_index, faces.face_frame[rows])]
    start_b = split_time(times, faces.xyxy[rows], a.times[-1], b.times[0])
    assert start_b == pytest.approx(b.start)  # the frame after the cut: where the box jumps
    parts = split_appearance(joined, [len(a.times)], [(a.start, a.end), (start_b, b.end)], [a.track_id, 99])
    assert [p.track_id for p in parts] == [a.track_id, 99] and cluster_tracks(parts) == [0, 1]


@pytest.mark.parametrize("name, persons", [("two_faces.mp4", 2), ("three_faces_walking.mp4", 3)])
def test_the_people_of_a_shared_clip_are_found(name, persons, models, embedder):
    """People side by side, seen together all along (480x270: faces 50-90 px)."""
    run = run_persons_path(shared(f"videos/{name}"), models, embedder)
    assert len(run.appearances) == persons
    assert sorted(cluster_tracks(run.appearances)) == list(range(persons))


def test_tracks_too_short_or_never_sure_are_no_person(aba):
    run, _ = aba
    a, b, again = run.appearances
    glimpse = TrackAppearance(7, 1.0, 1.0 + MIN_TRACK_SECONDS / 2, a.times[:1], a.embeddings[:1], a.quality[:1], 1.0)
    unsure = TrackAppearance(8, 1.0, 3.0, b.times, b.embeddings, b.quality, 0.89)  # the false track peaked at 0.89
    assert cluster_tracks([a, glimpse, b, unsure, again]) == [0, None, 1, None, 0]


def test_live_registry_gives_a_returning_person_their_id(aba):
    run, _ = aba
    registry = PersonRegistry()
    assert [registry.assign(appearance) for appearance in run.appearances] == [0, 1, 0]
    a = run.appearances[0]
    beside_a = TrackAppearance(9, a.start, a.end, a.times, a.embeddings, a.quality, 1.0)  # A's face, at A's time
    assert registry.assign(beside_a) == 2 and len(registry) == 3


def test_persons_table_adds_up_its_tracks(aba):
    run, _ = aba
    totals = TimelineTotals(LABELS, min_episode_seconds=0.5)
    totals.add(run.faces.with_smoothed(run.faces.probabilities))
    tracks = totals.tables()["tracks"]
    person_of = dict(zip([a.track_id for a in run.appearances], cluster_tracks(run.appearances)))
    persons = persons_table(tracks, person_of, LABELS)
    assert persons.column("person_id").to_pylist() == [0, 1]
    assert persons.column("frames").to_pylist() == [100, 50]
    assert [len(t) for t in persons.column("tracks").to_pylist()] == [2, 1]
    shares = np.stack([persons.column(f"share_{label}").to_numpy() for label in LABELS], axis=1)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, atol=1e-5)
    woman = persons.slice(0, 1).to_pylist()[0]
    assert woman["time_on_screen_s"] == pytest.approx(2 * 49 / 24, abs=0.01)
    assert woman["first_time"] == 0.0 and woman["last_time"] == pytest.approx(149 / 24, abs=0.01)
    assert woman["best_track"] in woman["tracks"]


def test_a_segment_makes_chips_for_a_few_faces_of_each_place(models):
    """two_faces' first 2 s: a woman and a man side by side; each gets one chip per half second."""
    from pipeline.faces import FaceStep
    from pipeline.sources.file import iter_frames, probe

    path = shared("videos/two_faces.mp4")
    frames = [frame for frame in iter_frames(path) if frame.pts_time < 2.0]
    out = run_segment(FaceStep(models, probe(path), det_size=640), frames)
    face_time = out.faces.pts_time[np.searchsorted(out.faces.frame_index, out.faces.face_frame)]
    stretches = np.unique(np.floor(face_time / 0.5))
    assert len(stretches) == 4 and len(out.chips) == 2 * len(stretches)
    assert np.array_equal(sorted(out.chips), chip_candidates(face_time, out.faces.xyxy, out.quality))
    left = out.faces.xyxy[sorted(out.chips), 0] < 240
    assert left.sum() == (~left).sum() == len(stretches)


def test_track_samples_stay_bounded_and_cover_the_whole_track():
    samples = TrackSamples(capacity=4, bin_seconds=1.0)
    quality = np.random.default_rng(0).random(600)
    for i in range(600):  # 20 s at 30 fps
        samples.offer(Sample(i / 30, i, float(quality[i]), None))
        assert len(samples.samples) <= 4
    kept = samples.samples
    assert samples.bin_seconds == 8.0 and len(kept) == 3  # stretches 0-8, 8-16, 16-20 s
    for sample, (start, end) in zip(kept, [(0, 240), (240, 480), (480, 600)]):
        assert sample.quality == quality[start:end].max()
