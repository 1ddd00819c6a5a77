"""Following persons as tracked faces stream by: what a video's unit (batch) and a live source keep per track.

Both get every tracked batch in frame order (``observe``) with chips of a few of its faces (``FaceBatch.chips``,
cut in the face step). Per open track they keep its span, the detector's best score for it, its best few chips
(``sampling.TrackSampler``) and the times of its box's large jumps. The chips are embedded, batched, by
``embed`` (the face embedder in the models' process), and then only the descriptors stay: memory holds the
open tracks' few chips, never a video.

- ``VideoPersons`` (batch) embeds a track's chips when it ends (unseen for the tracker's lost time, or at a
  shot cut) and decides when the video ends (``finish``): a track whose samples disagree is split
  (``identity.identity_switches``) at the largest jump of its box between the two samples that disagree, then
  the tracks are clustered into persons (``identity.cluster_tracks``). ``PersonLabels`` gives each face row
  its final track and person.
- ``LivePersons`` (live) decides as it goes: once a track has lasted ``MIN_TRACK_SECONDS`` and has
  ``LIVE_SAMPLES`` samples, it is matched to the session's persons (``identity.PersonRegistry``) and keeps that
  person; its faces before that have none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from pipeline.persons.identity import (
    MIN_TRACK_SECONDS, PersonRegistry, TrackAppearance, cluster_tracks, identity_switches, split_appearance,
)
from pipeline.persons.sampling import Sample, TrackSampler, face_quality
from pipeline.results import NO_PERSON, FaceBatch

Embed = Callable[[np.ndarray], np.ndarray]  # (n, 150, 150, 3) uint8 chips -> (n, d) float32 descriptors
JUMP = 0.5  # a box moving more than half its size from one face of a track to the next: maybe another person
EMBED_BATCH = 32  # ended tracks' chips are embedded this many at a time (and whatever is left at the end)
LIVE_SAMPLES = 2  # samples a live track needs before it is matched to a person


@dataclass
class _OpenTrack:
    start: float
    end: float
    peak_score: float
    centre: np.ndarray
    size: float
    jumps: list = field(default_factory=list)  # (time, jump) of each large jump of the box


class TrackFollower:
    """The open tracks of one video or stream: spans, best scores, box jumps and samples, fed in frame order."""

    def __init__(self, lost_seconds: float) -> None:
        self.lost_seconds = lost_seconds
        self.sampler = TrackSampler()
        self.open: dict[int, _OpenTrack] = {}

    def observe(self, batch: FaceBatch, cuts: frozenset[int] | set[int] = frozenset()) -> list:
        """Take the next tracked faces; returns the tracks that ended, as (track, state, samples)."""
        chip_of = dict(zip(batch.chip_rows.tolist(), batch.chips)) if batch.chip_rows is not None else {}
        goodness = face_quality(batch.det_score, batch.face_px, batch.yaw, batch.pitch, batch.sharpness)
        ended = []
        for frame, time, start, end in zip(batch.frame_index.tolist(), batch.pts_time.tolist(), *batch.face_ranges()):
            if frame in cuts:  # no track goes on past a cut
                ended += self.close(list(self.open))
            for row in range(start, end):
                self._face(int(batch.track_id[row]), time, frame, float(goodness[row]), batch, row, chip_of.get(row))
            ended += self.close([track for track, state in self.open.items() if time - state.end > self.lost_seconds])
        return ended

    def close(self, tracks: list[int]) -> list:
        """End these open tracks: (track, state, samples) of each."""
        return [(track, self.open.pop(track), self.sampler.pop(track)) for track in tracks]

    def _face(self, track: int, time: float, frame: int, goodness: float, batch: FaceBatch, row: int,
              chip: np.ndarray | None) -> None:
        box = batch.xyxy[row].astype(np.float64)
        centre, size = (box[:2] + box[2:]) / 2, max(float((box[2:] - box[:2]).mean()), 1e-6)
        state = self.open.get(track)
        if state is None:
            state = self.open[track] = _OpenTrack(time, time, 0.0, centre, size)
        elif (jump := float(np.linalg.norm(centre - state.centre)) / state.size) > JUMP:
            state.jumps.append((time, jump))
        state.end, state.centre, state.size = time, centre, size
        state.peak_score = max(state.peak_score, float(batch.det_score[row]))
        if chip is not None:
            self.sampler.offer(track, Sample(time, frame, goodness, chip))
        else:
            self.sampler.seen(track, time)


@dataclass
class PersonLabels:
    """A video's final tracks and persons.

    Attributes:
        splits: for a track split at identity switches, the (time, new track id) where each later part starts.
        person_of_track: each final track's person (None: no person).
        appearances: each final track's samples and descriptors (for ``--persons across`` and embeddings kept).
    """

    splits: dict[int, list[tuple[float, int]]]
    person_of_track: dict[int, int | None]
    appearances: list[TrackAppearance]

    def apply(self, track_id: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(final track id, person id or ``NO_PERSON``) of face rows given by their tracker id and time."""
        final = np.asarray(track_id, np.int64).copy()
        for track, parts in self.splits.items():
            rows = final == track
            for start, new in parts:
                final[rows & (times >= start)] = new
        person = np.array([NO_PERSON if (p := self.person_of_track.get(int(t))) is None else p for t in final], np.int64)
        return final, person


class VideoPersons:
    """Persons of one video's tracks (batch): samples kept as faces stream by, persons decided at the end."""

    def __init__(self, embed: Embed, lost_seconds: float) -> None:
        self.embed = embed
        self.follower = TrackFollower(lost_seconds)
        self._waiting: list = []  # ended tracks whose chips are not embedded yet
        self._appearances: list[tuple[TrackAppearance, list]] = []  # with each one's box jumps

    def observe(self, batch: FaceBatch, cuts: frozenset[int] | set[int] = frozenset()) -> None:
        self._waiting += self.follower.observe(batch, cuts)
        if sum(len(samples) for _, _, samples in self._waiting) >= EMBED_BATCH:
            self._embed_waiting()

    def finish(self) -> PersonLabels:
        """The video ended: split tracks at identity switches, cluster them into persons."""
        self._waiting += self.follower.close(list(self.follower.open))
        self._embed_waiting()
        return decide_persons(self._appearances)

    def _embed_waiting(self) -> None:
        chips = [sample.chip for _, _, samples in self._waiting for sample in samples]
        descriptors = self.embed(np.stack(chips)) if chips else np.zeros((0, 0), np.float32)
        at = 0
        for track, state, samples in self._waiting:
            appearance = TrackAppearance(track, state.start, state.end, np.array([s.time for s in samples], np.float64),
                                         descriptors[at:at + len(samples)],
                                         np.array([s.quality for s in samples], np.float32), state.peak_score)
            self._appearances.append((appearance, state.jumps))
            at += len(samples)
        self._waiting = []


def decide_persons(appearances: list[tuple[TrackAppearance, list]]) -> PersonLabels:
    """A video's persons from its tracks' appearances (each with its box's large jumps, (time, jump)): tracks
    whose samples disagree are split, new parts numbered after the largest track id, then all are clustered."""
    next_id = max((appearance.track_id for appearance, _ in appearances), default=-1) + 1
    splits, parts = {}, []
    for appearance, jumps in sorted(appearances, key=lambda item: item[0].track_id):
        positions = identity_switches(appearance.embeddings)
        if not positions:
            parts.append(appearance)
            continue
        starts = [_split_time(appearance.times, jumps, position) for position in positions]
        ids = [appearance.track_id] + list(range(next_id, next_id + len(positions)))
        next_id += len(positions)
        splits[appearance.track_id] = list(zip(starts, ids[1:]))
        spans = list(zip([appearance.start, *starts], [*starts, appearance.end]))
        parts += split_appearance(appearance, positions, spans, ids)
    persons = cluster_tracks(parts)
    return PersonLabels(splits, {part.track_id: person for part, person in zip(parts, persons)}, parts)


def _split_time(sample_times: np.ndarray, jumps: list, position: int) -> float:
    """Where a track's new identity starts: at its box's largest jump after the last sample of the old one, up
    to the first sample of the new one (at that sample when the box never jumped)."""
    after, before = float(sample_times[position - 1]), float(sample_times[position])
    inside = [(jump, time) for time, jump in jumps if after < time <= before]
    return max(inside)[1] if inside else before


class LivePersons:
    """Persons of a live session's tracks, decided as the frames come (``PersonRegistry``)."""

    def __init__(self, embed: Embed, lost_seconds: float) -> None:
        self.embed = embed
        self.follower = TrackFollower(lost_seconds)
        self.registry = PersonRegistry()
        self.person_of_track: dict[int, int | None] = {}

    def observe(self, batch: FaceBatch, cuts: frozenset[int] | set[int] = frozenset()) -> np.ndarray:
        """(n,) the person of each face of ``batch`` as far as known (``NO_PERSON``: none, or not yet)."""
        self.follower.observe(batch, cuts)
        for track, state in self.follower.open.items():
            samples = self.follower.sampler.samples(track)
            if (track not in self.person_of_track and state.end - state.start >= MIN_TRACK_SECONDS
                    and len(samples) >= LIVE_SAMPLES):
                descriptors = self.embed(np.stack([sample.chip for sample in samples]))
                appearance = TrackAppearance(track, state.start, state.end, np.array([s.time for s in samples]),
                                             descriptors, np.array([s.quality for s in samples]), state.peak_score)
                self.person_of_track[track] = self.registry.assign(appearance)
        return np.array([NO_PERSON if (p := self.person_of_track.get(int(t))) is None else p for t in batch.track_id],
                        np.int64)
