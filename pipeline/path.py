"""The path after the face step, composed once for batch and live mode: tracker -> persons -> smoother -> sinks.

One ``FacePath`` per video (batch: in the video's unit, ``pipeline.batch.video``) or per live source.
Batches of face-step results go in, in frame order; the tracker numbers the faces (starting afresh at each
shot cut), the persons stage keeps a few samples of each track (``pipeline.persons.follow``), the smoother
averages each track's emotions over time, and every sink gets the rows once they are final. Batch mode
smooths both ways, so rows reach the sinks a bounded window behind (``pipeline.smoothing.TwoPassSmoother``),
and decides persons when the video ends (the sinks get them on close); live mode smooths causally and
matches persons as it goes, so each frame reaches the sinks at once, with its person when known.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Protocol

import numpy as np

from pipeline.persons.follow import LivePersons, PersonLabels, VideoPersons
from pipeline.results import FaceBatch
from pipeline.smoothing import CausalSmoother, TwoPassSmoother
from pipeline.track import FaceTracker


class Sink(Protocol):
    """Where final rows go: ``write`` each batch in frame order, then ``close`` (or ``abort`` on failure)."""

    def write(self, batch: FaceBatch) -> None: ...

    def close(self) -> None: ...


class FacePath:
    """Tracks, smooths and hands on one video's or stream's face-step results.

    Args:
        sinks: where the final rows go, in this order.
        num_labels: how many emotion probabilities each face has.
        frame_rate: processed frames per second (the tracker's lost-track buffer is in frames).
        smoothing_seconds: time constant of each track's moving average (0: none).
        causal: smooth from the past only (live) instead of both ways (batch).
    """

    def __init__(self, sinks: list[Sink], *, num_labels: int, frame_rate: float, smoothing_seconds: float,
                 causal: bool, persons: VideoPersons | LivePersons | None = None) -> None:
        self.sinks, self.num_labels, self.causal, self.persons = list(sinks), num_labels, causal, persons
        self.tracker = FaceTracker(frame_rate=frame_rate)
        self._causal = CausalSmoother(smoothing_seconds) if causal else None
        self._two_pass = None if causal else TwoPassSmoother(smoothing_seconds, num_labels)
        self.person_labels: PersonLabels | None = None  # a video's persons, once closed

    def write(self, batch: FaceBatch, *, cuts: frozenset[int] | set[int] = frozenset(),
              clock: np.ndarray | None = None) -> FaceBatch:
        """Track and smooth the next batch and give the sinks what is final; returns that.

        ``cuts``: frame indexes of ``batch`` that start a new shot (no track goes on past one).
        ``clock``: (m,) seconds at which each frame was seen, for the causal smoother (default ``pts_time``:
        a replayed file smooths as it was recorded; a camera's clock is when its frames arrive).
        """
        tracked = self.tracker.update_with_faces(batch, cuts=cuts)
        if isinstance(self.persons, LivePersons):
            tracked = replace(tracked, person_id=self.persons.observe(tracked, cuts))
        elif self.persons is not None:
            self.persons.observe(tracked, cuts)
        tracked = replace(tracked, chip_rows=None, chips=None)  # the persons' samples are taken
        if self._causal is None:
            final = self._two_pass.write(tracked)
        else:
            final = tracked.with_smoothed(self._smooth_causally(tracked, batch.pts_time if clock is None else clock))
        self._emit(final)
        return final

    def close(self) -> None:
        """The end of the video or stream: the rows still held go to the sinks, a video's persons are decided,
        and the sinks all close (the first error of any is raised after)."""
        labels = None
        try:
            if self._two_pass is not None:
                self._emit(self._two_pass.close())
            if isinstance(self.persons, VideoPersons):
                labels = self.person_labels = self.persons.finish()
        finally:
            errors = []
            for sink in self.sinks:  # each one closes, whatever another one does
                try:
                    sink.close() if labels is None else sink.close(labels)
                except Exception as error:  # noqa: BLE001  (raised below, after the others closed)
                    errors.append(error)
            if errors:
                raise errors[0]

    def abort(self) -> None:
        """Give up: every sink drops what it wrote (those that can)."""
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                getattr(sink, "abort", sink.close)()

    def _smooth_causally(self, batch: FaceBatch, clock: np.ndarray) -> np.ndarray:
        smoothed = np.empty(batch.probabilities.shape, np.float32)
        for (start, end), time in zip(zip(*batch.face_ranges()), clock):
            smoothed[start:end] = self._causal.update(batch.track_id[start:end], float(time),
                                                      batch.probabilities[start:end])
        return smoothed

    def _emit(self, final: FaceBatch) -> None:
        if final.num_frames:
            for sink in self.sinks:
                sink.write(final)
