"""Persons from real clips: an A-B-A clip joined from the shared clips by hard cuts, and the shared clips whose
people were counted by looking at their frames. Through ``emoray run`` (a real local Ray), and through the
same path in this process where a test needs what the job keeps to itself (the tracks' samples)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jobs.spec import ModelOptions
from pipeline.api import run_batch
from pipeline.faces import FaceStep
from pipeline.inference import LocalModels
from pipeline.path import FacePath
from pipeline.persons.follow import VideoPersons, decide_persons
from pipeline.persons.identity import MIN_TRACK_SECONDS, PersonRegistry, TrackAppearance, cluster_tracks
from pipeline.persons.sampling import SAMPLES_PER_TRACK, Sample, TrackSamples
from pipeline.query import query
from pipeline.sources.file import iter_frames, probe
from pipeline.track import LOST_SECONDS
from tests.conftest import shared
from tests.pipeline.media import joined_clip

PEOPLE = {"two_faces.mp4": 2, "three_faces_walking.mp4": 3, "single_face.mp4": 1}  # counted on their frames


@pytest.fixture(scope="module")
def aba_clip(tmp_path_factory) -> tuple[Path, list[int]]:
    """The woman (A) crying, the man (B), the woman again smiling 8 s later in her clip: 50 frames each at
    24 fps, joined by hard cuts at frames 50 and 100. The tracker alone made 2 tracks of it: A's face comes back
    where it was, so her track crossed both cuts."""
    woman, man = shared("videos/WolfgangLanger_Pexels.mp4"), shared("videos/single_face.mp4")
    return joined_clip(tmp_path_factory.mktemp("persons") / "aba.mp4", [(woman, 0, 50), (man, 0, 50), (woman, 200, 250)])


@pytest.fixture(scope="module")
def job(local_ray, aba_clip, tmp_path_factory) -> dict:
    """``emoray run --persons across`` of the A-B-A clip and the shared clips of 2, 3 and 1 people."""
    out = tmp_path_factory.mktemp("persons-job") / "out"
    clips = [str(aba_clip[0]), *(str(shared(f"videos/{name}")) for name in PEOPLE)]
    outcomes = run_batch(clips, out, annotate=False, persons="across")
    assert [o.status for o in outcomes] == ["complete"] * len(clips), [o.error for o in outcomes]
    return {"out": out, "clips": clips, "ids": {Path(o.path).name: o.video_id for o in outcomes}}


def rows(job: dict, sql: str) -> list[tuple]:
    return query(job["out"], sql).fetchall()


def test_aba_gives_three_tracks_none_across_a_cut_and_two_persons(job, aba_clip):
    aba = job["ids"]["aba.mp4"]
    _, cuts = aba_clip
    manifest = json.loads((job["out"] / "manifest" / f"{aba}.json").read_text())
    assert manifest["shot_cuts"] == pytest.approx([cut / 24 for cut in cuts]) and manifest["counts"]["shots"] == 3
    shots = rows(job, f"SELECT shot, min(frame_index), max(frame_index) FROM frames WHERE video_id = '{aba}' GROUP BY 1 ORDER BY 1")
    assert shots == [(0, 0, 49), (1, 50, 99), (2, 100, 149)]
    tracks = rows(job, f"""SELECT f.track_id, count(DISTINCT s.shot), min(s.shot), any_value(f.person_id)
                           FROM faces f JOIN frames s USING (video_id, frame_index)
                           WHERE video_id = '{aba}' GROUP BY 1 ORDER BY 1""")
    assert [(shot_count, shot) for _, shot_count, shot, _ in tracks] == [(1, 0), (1, 1), (1, 2)]  # none spans a cut
    assert [person for *_, person in tracks] == [0, 1, 0]  # A's two appearances are one person, in order of appearance
    persons = rows(job, f"SELECT person_id, tracks, frames FROM persons WHERE video_id = '{aba}' ORDER BY 1")
    assert [(p, sorted(t), n) for p, t, n in persons] == [(0, [0, 2], 100), (1, [1], 50)]
    assert rows(job, f"SELECT DISTINCT person_id FROM episodes WHERE video_id = '{aba}' ORDER BY 1") == [(0,), (1,)]


@pytest.mark.parametrize("name", sorted(PEOPLE))
def test_the_people_of_a_shared_clip_are_its_persons(job, name):
    """People side by side, seen together all along: never one person; each a person of its own."""
    video = job["ids"][name]
    persons = rows(job, f"SELECT person_id FROM persons WHERE video_id = '{video}' ORDER BY 1")
    assert persons == [(p,) for p in range(PEOPLE[name])]
    unassigned = rows(job, f"SELECT count(*) FROM faces WHERE video_id = '{video}' AND person_id IS NULL")[0][0]
    total = rows(job, f"SELECT count(*) FROM faces WHERE video_id = '{video}'")[0][0]
    assert unassigned <= 0.05 * total  # every face of a real person belongs to one


def test_a_persons_row_adds_up_its_tracks(job):
    aba = job["ids"]["aba.mp4"]
    (woman,) = [r for r in query(job["out"], f"SELECT * FROM persons WHERE video_id = '{aba}' AND person_id = 0").to_arrow_table().to_pylist()]
    labels = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert sum(woman[f"share_{label}"] for label in labels) == pytest.approx(1.0, abs=1e-5)
    assert woman["time_on_screen_s"] == pytest.approx(2 * 49 / 24, abs=0.01)
    assert woman["first_time"] == 0.0 and woman["last_time"] == pytest.approx(149 / 24, abs=0.01)
    assert woman["best_track"] in woman["tracks"] and "embedding" not in woman  # no biometric data unless asked


def test_across_the_jobs_videos_the_same_people_are_one_person_and_stay_so_when_rerun(job):
    """B of the A-B-A clip is the man of single_face.mp4; one actress is in two_faces.mp4 and in
    three_faces_walking.mp4 (checked on their frames): 8 persons of 4 videos are 6 people."""
    def job_persons() -> dict:
        ids = {video_id: name for name, video_id in job["ids"].items()}
        return {(ids[v], p): j for v, p, j in rows(job, "SELECT video_id, person_id, job_person_id FROM job_persons")}

    linked = job_persons()
    assert len(linked) == 8 and len(set(linked.values())) == 6
    assert linked[("aba.mp4", 0)] == 0 and linked[("aba.mp4", 1)] == linked[("single_face.mp4", 0)]
    shared_by_two = {linked[key] for key in linked if key[0] == "two_faces.mp4"} & {
        linked[key] for key in linked if key[0] == "three_faces_walking.mp4"}
    assert len(shared_by_two) == 1
    assert "embedding" not in [column for column, *_ in rows(job, "DESCRIBE persons")]  # not unless asked
    again = run_batch(job["clips"], job["out"], annotate=False, persons="across")
    assert {o.status for o in again} == {"skipped"} and job_persons() == linked


def test_the_report_speaks_of_persons(job, tmp_path):
    from pipeline.html_report import write_report

    page = Path(write_report(job["out"], tmp_path / "report.html")).read_text()
    aba = page[page.index("<summary><b><bdi>aba.mp4</bdi></b>"):]
    aba = aba[:aba.index("</details>")]
    assert "2 persons in 3 tracks" in aba
    assert aba.count('<figure class="card">') == 2 and "person 0" in aba and "person 1" in aba


def test_live_mode_knows_a_returning_person(aba_clip):
    """The A-B-A clip replayed in live mode: each track is matched to the session's persons once it has lasted
    a moment (two samples), so A is person 0 in her first shot and again when she returns, B person 1."""
    from pipeline.api import live

    path, cuts = aba_clip
    with live(path, device="cpu") as results:
        batches = list(results)
    assert [b.shot[0] for b in batches] == [0] * cuts[0] + [1] * (cuts[1] - cuts[0]) + [2] * (150 - cuts[1])
    last_persons = [{int(p) for b in batches[end - 10:end] for p in b.person_id} for end in (*cuts, 150)]
    assert last_persons == [{0}, {1}, {0}]


def test_embeddings_are_written_only_when_asked(local_ray, tmp_path):
    out = tmp_path / "out"
    (outcome,) = run_batch([str(shared("videos/single_face.mp4"))], out, annotate=False, keep_embeddings=True)
    assert outcome.status == "complete"
    ((embedding,),) = query(out, "SELECT embedding FROM persons").fetchall()
    assert len(embedding) == 128 and 0.5 < float(np.linalg.norm(embedding)) < 1.5  # dlib's descriptors: norm ~1


@pytest.fixture(scope="module")
def aba_samples(aba_clip) -> list[TrackAppearance]:
    """The A-B-A clip through the face step and the path after it in this process: each track's samples."""
    path, _ = aba_clip
    models = LocalModels(ModelOptions(device="cpu"))
    info = probe(path)
    step = FaceStep(models, info, det_size=640, chips=True)
    persons = VideoPersons(models.embed, LOST_SECONDS)
    face_path = FacePath([], num_labels=len(models.labels), frame_rate=info.fps, smoothing_seconds=1.0, causal=False,
                         persons=persons)
    frames = list(iter_frames(path))
    for start in range(0, len(frames), 8):
        face_path.write(step(frames[start:start + 8]), cuts={50, 100} & {f.index for f in frames[start:start + 8]})
    labels = persons.finish()
    assert labels.splits == {}  # no track of it changes identity
    return labels.appearances


def test_each_track_embeds_a_bounded_few_of_its_faces_spread_over_it(aba_samples):
    assert len(aba_samples) == 3
    for appearance in aba_samples:
        assert 2 <= len(appearance.times) <= SAMPLES_PER_TRACK
        assert appearance.start <= appearance.times.min() and appearance.times.max() <= appearance.end
        assert appearance.times.max() - appearance.times.min() >= 0.5 * (appearance.end - appearance.start)


def test_a_track_holding_two_people_is_split_where_they_change(aba_samples):
    """What the tracker did to A-B-A before shots were cut: one track of A, then B. Its samples disagree."""
    a, b, _ = aba_samples
    joined = TrackAppearance(a.track_id, a.start, b.end, np.r_[a.times, b.times], np.r_[a.embeddings, b.embeddings],
                             np.r_[a.quality, b.quality], 1.0)
    labels = decide_persons([(joined, [(b.start, 3.0)])])  # its box jumped when B appeared
    assert labels.splits == {a.track_id: [(b.start, a.track_id + 1)]}
    assert [labels.person_of_track[t] for t in (a.track_id, a.track_id + 1)] == [0, 1]
    track, person = labels.apply(np.array([a.track_id] * 3), np.array([a.start, b.start - 0.01, b.start]))
    assert track.tolist() == [a.track_id, a.track_id, a.track_id + 1] and person.tolist() == [0, 0, 1]


def test_tracks_too_short_or_never_sure_are_no_person(aba_samples):
    a, b, again = aba_samples
    glimpse = TrackAppearance(7, 1.0, 1.0 + MIN_TRACK_SECONDS / 2, a.times[:1], a.embeddings[:1], a.quality[:1], 1.0)
    unsure = TrackAppearance(8, 1.0, 3.0, b.times, b.embeddings, b.quality, 0.89)  # the false track peaked at 0.89
    assert cluster_tracks([a, glimpse, b, unsure, again]) == [0, None, 1, None, 0]


def test_live_registry_gives_a_returning_person_their_id(aba_samples):
    registry = PersonRegistry()
    assert [registry.assign(appearance) for appearance in aba_samples] == [0, 1, 0]
    a = aba_samples[0]
    beside_a = TrackAppearance(9, a.start, a.end, a.times, a.embeddings, a.quality, 1.0)  # A's face, at A's time
    assert registry.assign(beside_a) == 2 and len(registry) == 3


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
