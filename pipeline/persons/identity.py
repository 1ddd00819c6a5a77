"""From the embedded samples of a video's tracks to persons: split at identity switches, cluster, leave out non-persons.

Distances are Euclidean between dlib descriptors (``models.embedding``). Measured on the shared clips (the
best face of each 2 s of every track, 29 such samples of 6 people, identities checked on the frames): one
person's samples lie 0.43 apart (median), 0.60 (95th percentile), 0.64 at most (crying against laughing);
two people's 0.60 apart at least, 0.65 at the 1st percentile, 0.80 median.

- ``cluster_tracks``: average-linkage clustering of the tracks' mean embeddings, cut at ``PERSON_DISTANCE``
  0.55. On the clip joining all shared clips (9 tracks of 6 people, 2-5 samples each) one person's tracks
  lay 0.06-0.47 apart (0.47: one woman in two different videos; on the A-B-A clip, the woman crying and
  then smiling 8 s later: 0.45), two people's 0.58 at least (two women of two videos: dlib's usual 0.6
  would join them, were the first not seen beside the second); 0.55 lies in that gap, nearer the
  different people because one face's distances to its own person reach 0.64 when the expression
  changes. (With one sample a track the gap was 0.51 to 0.59.) Two tracks seen at
  the same time are never one person. Ids from 0 in order of first appearance. dlib is not infallible:
  two smiling young women of photos/multi_face.jpg lie 0.49 apart; seen in different shots, they would be
  taken for one person.
- ``identity_switches``: a track whose samples fall into two groups whose means are farther apart than
  ``SWITCH_DISTANCE`` 0.7 is split between them: above any one person's pair measured (0.64; inside the
  real tracks of the shared clips the largest gap between the parts' means was 0.54), so a track is not
  split by a change of expression; below 95% of two people's pairs.
- A track is no person (None) when it lasts less than ``MIN_TRACK_SECONDS`` (too short to judge) or when
  the detector was never sure of it (``looks_like_a_face``: its best score under ``MIN_PEAK_SCORE``). The
  descriptors themselves cannot tell: the detector's non-faces of the shared data (titles, a door, a black
  frame) lie 0.51-0.60 from the nearest real face, inside the range of two people's distances.
- ``PersonRegistry``: live mode's causal variant, each ended track matched to the persons seen so far.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

PERSON_DISTANCE = 0.55  # most average distance of two groups of tracks' means that are one person
SWITCH_DISTANCE = 0.7  # least distance of a track's two parts' means that splits it
MIN_TRACK_SECONDS = 0.3  # shorter tracks (first to last face) are no person: too short to judge
# a track whose best detector score stays under this is no person: every real track of the shared clips peaks
# at 0.9966 or more; the false track of the A-B-A clip (a non-face in B's shot) peaked at 0.89
MIN_PEAK_SCORE = 0.95
APART = 1e6  # distance given to two tracks seen at the same time: never one person


@dataclass
class TrackAppearance:
    """A track's span and its embedded samples.

    Attributes:
        track_id: the tracker's id.
        start, end: times of its first and last face, seconds.
        times: (k,) times of the embedded samples, rising.
        embeddings: (k, d) float32 their descriptors.
        quality: (k,) their ``face_quality``.
        peak_score: the highest detector score of any of its faces.
    """

    track_id: int
    start: float
    end: float
    times: np.ndarray
    embeddings: np.ndarray
    quality: np.ndarray
    peak_score: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    def mean(self) -> np.ndarray:
        return self.embeddings.mean(axis=0)


def identity_switches(embeddings: np.ndarray, threshold: float = SWITCH_DISTANCE) -> list[int]:
    """Sample positions where a track changes identity: each is the first sample of a new part.

    Binary segmentation: the split with the largest distance between the means of the samples before and
    after it is taken when that distance exceeds ``threshold``, then each part is looked at again.
    """
    embeddings = np.asarray(embeddings, np.float64)
    if len(embeddings) < 2:
        return []
    gaps = [np.linalg.norm(embeddings[:i].mean(axis=0) - embeddings[i:].mean(axis=0))
            for i in range(1, len(embeddings))]
    best = int(np.argmax(gaps)) + 1
    if gaps[best - 1] <= threshold:
        return []
    return (identity_switches(embeddings[:best], threshold) + [best]
            + [best + i for i in identity_switches(embeddings[best:], threshold)])


def looks_like_a_face(appearance: TrackAppearance, min_peak_score: float = MIN_PEAK_SCORE) -> bool:
    """Whether the detector was, at least once, sure that the track is a face."""
    return appearance.peak_score >= min_peak_score


def is_person_candidate(appearance: TrackAppearance, min_seconds: float = MIN_TRACK_SECONDS) -> bool:
    """A track counts towards persons when it lasts long enough and looks like a face."""
    return appearance.duration >= min_seconds and len(appearance.embeddings) > 0 and looks_like_a_face(appearance)


def cluster_tracks(appearances: list[TrackAppearance], threshold: float = PERSON_DISTANCE) -> list[int | None]:
    """The person of each track (None: no person), ids from 0 in order of first appearance.

    Args:
        appearances: the video's tracks (after ``identity_switches`` splits), any order.
        threshold: most average distance between two groups of track means that are one person.
    """
    candidates = [i for i, appearance in enumerate(appearances) if is_person_candidate(appearance)]
    persons: list[int | None] = [None] * len(appearances)
    if not candidates:
        return persons
    means = np.stack([appearances[i].mean() for i in candidates])
    spans = np.array([(appearances[i].start, appearances[i].end) for i in candidates])
    together = (spans[:, None, 0] <= spans[None, :, 1]) & (spans[None, :, 0] <= spans[:, None, 1])
    for i, person in zip(candidates, cluster_means(means, together, spans[:, 0], threshold)):
        persons[i] = person
    return persons


def cluster_means(means: np.ndarray, apart: np.ndarray, first_seen: np.ndarray,
                  threshold: float = PERSON_DISTANCE) -> list[int]:
    """Average-linkage clusters of (n, d) mean embeddings cut at ``threshold``, never joining two whose
    ``apart`` (n, n) is true; numbered from 0 in order of ``first_seen`` (n,) (ties: input order)."""
    if len(means) == 1:
        return [0]
    means = np.asarray(means, np.float64)
    distance = np.linalg.norm(means[:, None] - means[None], axis=-1)
    distance[np.asarray(apart, bool)] = APART
    np.fill_diagonal(distance, 0.0)
    labels = fcluster(linkage(squareform(distance, checks=False), method="average"), t=threshold, criterion="distance")
    first: dict[int, tuple] = {}
    for index, label in enumerate(labels.tolist()):
        first[label] = min(first.get(label, (np.inf, index)), (float(first_seen[index]), index))
    order = {label: rank for rank, label in enumerate(sorted(first, key=first.get))}
    return [order[label] for label in labels.tolist()]


class PersonRegistry:
    """Live mode: persons known so far in a session; each ended track joins the nearest or starts a new one.

    Args:
        threshold: most distance of a track's mean from a person's mean to be that person.
    """

    def __init__(self, threshold: float = PERSON_DISTANCE) -> None:
        self.threshold = threshold
        self._sums: list[np.ndarray] = []
        self._counts: list[int] = []
        self._spans: list[list[tuple[float, float]]] = []

    def assign(self, appearance: TrackAppearance) -> int | None:
        """The person of an ended track (None: no person); the person's mean moves towards it. A person
        already seen at the same time as the track (in another track) is not a candidate."""
        if not is_person_candidate(appearance):
            return None
        mean = appearance.mean().astype(np.float64)
        if self._sums:
            distances = np.linalg.norm(np.stack(self._sums) / np.array(self._counts)[:, None] - mean, axis=1)
            for person, spans in enumerate(self._spans):
                if any(start <= appearance.end and appearance.start <= end for start, end in spans):
                    distances[person] = np.inf
            nearest = int(np.argmin(distances))
            if distances[nearest] <= self.threshold:
                self._sums[nearest] += mean
                self._counts[nearest] += 1
                self._spans[nearest].append((appearance.start, appearance.end))
                return nearest
        self._sums.append(mean.copy())
        self._counts.append(1)
        self._spans.append([(appearance.start, appearance.end)])
        return len(self._sums) - 1

    def __len__(self) -> int:
        return len(self._sums)


def split_time(times: np.ndarray, xyxy: np.ndarray, after: float, before: float) -> float:
    """When a track's identity changed, between two samples at ``after`` and ``before`` seconds that disagree:
    the time of the face after the largest jump of the box (centre shift over box size) in that stretch.

    Args:
        times: (n,) rising times of the track's faces.
        xyxy: (n, 4) their boxes.
    """
    times, xyxy = np.asarray(times, np.float64), np.asarray(xyxy, np.float64)
    rows = np.flatnonzero((times >= after) & (times <= before))
    if len(rows) < 2:
        return float(before)
    centre = (xyxy[rows, :2] + xyxy[rows, 2:]) / 2
    size = np.maximum((xyxy[rows, 2:] - xyxy[rows, :2]).mean(axis=1), 1e-6)
    jump = np.linalg.norm(np.diff(centre, axis=0), axis=1) / size[:-1]
    return float(times[rows[int(np.argmax(jump)) + 1]])


def split_appearance(appearance: TrackAppearance, positions: list[int], spans: list[tuple[float, float]],
                     track_ids: list[int]) -> list[TrackAppearance]:
    """The parts of a track cut before the samples at ``positions`` (``identity_switches``).

    Args:
        appearance: the whole track.
        positions: first sample of each new part, rising.
        spans: (first, last) face time of each part, len(positions) + 1 of them (see ``split_time``).
        track_ids: the id of each part; the first usually keeps the track's.
    """
    if not len(spans) == len(track_ids) == len(positions) + 1:
        raise ValueError(f"{len(positions)} positions need {len(positions) + 1} spans and track ids, "
                         f"but got {len(spans)} and {len(track_ids)}")
    bounds = [0, *positions, len(appearance.times)]
    return [TrackAppearance(track_ids[i], float(spans[i][0]), float(spans[i][1]),
                            appearance.times[bounds[i]:bounds[i + 1]], appearance.embeddings[bounds[i]:bounds[i + 1]],
                            appearance.quality[bounds[i]:bounds[i + 1]], appearance.peak_score)
            for i in range(len(bounds) - 1)]
