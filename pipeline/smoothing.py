"""Each track's emotions smoothed over time: an exponential moving average with a time constant in seconds.

The constant ``tau`` means the same at any frame rate, with ``--fps`` sampling and with dropped frames: a
step of ``dt`` seconds weighs the new value by ``1 - exp(-dt / tau)``. Batch mode runs it forward and then
backward over each track (no lag), streaming: a row is final once the video has gone ``HORIZON_TAUS * tau``
seconds past it, since later frames move it by less than ``exp(-HORIZON_TAUS)`` (below float32's
resolution), so memory holds that window, not the video. Live mode runs it forward only (the present from
the past).
"""

from __future__ import annotations

import numpy as np

from pipeline.results import FaceBatch

HORIZON_TAUS = 20.0  # exp(-20) = 2e-9: what a frame this many time constants later still changes a row by


def ema(times: np.ndarray, probabilities: np.ndarray, tau: float, *, start: np.ndarray | None = None,
        start_time: float | None = None) -> np.ndarray:
    """Causal exponential moving average of one track's (n, k) probabilities at rising ``times`` (seconds).

    A long gap forgets the past, a burst of frames does not over-weigh it. ``start``/``start_time``
    continue an earlier call.
    """
    smoothed = np.empty((len(times), probabilities.shape[1]), np.float32)
    current = None if start is None else start.astype(np.float64)
    previous = start_time
    for i, (time, value) in enumerate(zip(times, probabilities)):
        if current is None or tau <= 0:
            current = value.astype(np.float64)
        else:
            current = current + (1.0 - np.exp(-max(time - previous, 0.0) / tau)) * (value - current)
        smoothed[i], previous = current, time
    return smoothed


def _track_groups(track_id: np.ndarray, times: np.ndarray) -> list[np.ndarray]:
    """Row numbers of each track, in time order."""
    order = np.lexsort((times, track_id))
    return [rows for rows in np.split(order, np.flatnonzero(np.diff(track_id[order])) + 1) if len(rows)]


def smooth_tracks(track_id: np.ndarray, times: np.ndarray, probabilities: np.ndarray, tau: float) -> np.ndarray:
    """(n, k) smoothed probabilities of face rows in any order: each track forward then backward, whole."""
    smoothed = np.empty(probabilities.shape, np.float32)
    for rows in _track_groups(track_id, times):
        forward = ema(times[rows], probabilities[rows], tau)
        smoothed[rows] = ema(-times[rows][::-1], forward[::-1], tau)[::-1]
    return smoothed


class CausalSmoother:
    """Live mode's smoother: each track's moving average carried from frame to frame."""

    def __init__(self, tau: float) -> None:
        self.tau = tau
        self._state: dict[int, tuple[np.ndarray, float]] = {}

    def update(self, track_id: np.ndarray, time: float, probabilities: np.ndarray) -> np.ndarray:
        """(n, k) smoothed probabilities of one frame's faces (captured at ``time`` seconds)."""
        smoothed = np.empty(probabilities.shape, np.float32)
        for i, track in enumerate(track_id.tolist()):
            start, start_time = self._state.get(track, (None, None))
            smoothed[i] = ema(np.array([time]), probabilities[i:i + 1], self.tau, start=start, start_time=start_time)[0]
            self._state[track] = (smoothed[i], time)
        return smoothed


class TwoPassSmoother:
    """Batch mode's smoother, streaming: tracked batches in frame order in, final rows out.

    ``write`` returns the frames (with their faces, ``smoothed`` set) that the rest of the video can no longer
    change: those more than ``HORIZON_TAUS * tau`` seconds before the newest frame; ``close`` returns the rest.
    The results equal ``smooth_tracks`` over the whole video to within float32 rounding.
    """

    def __init__(self, tau: float, num_labels: int) -> None:
        self.tau, self.num_labels = tau, num_labels
        self.horizon = HORIZON_TAUS * tau
        self._forward: dict[int, tuple[np.ndarray, float]] = {}  # each track's forward average so far
        self._pending: list[FaceBatch] = []  # not yet final, each with its forward averages in ``smoothed``

    def write(self, batch: FaceBatch) -> FaceBatch:
        """The frames now final, in order (possibly none)."""
        if self.tau <= 0:
            return batch.with_smoothed(batch.probabilities)
        self._pending.append(batch.with_smoothed(self._forward_pass(batch)))
        if not batch.num_frames:
            return FaceBatch.empty(self.num_labels)
        pending = FaceBatch.concatenate(self._pending, self.num_labels)
        final_frames = int(np.searchsorted(pending.pts_time, batch.pts_time[-1] - self.horizon, side="right"))
        if final_frames == 0:
            self._pending = [pending]
            return FaceBatch.empty(self.num_labels)
        final, rest = pending.with_smoothed(self._backward_pass(pending)).split(final_frames)
        self._pending = [rest.with_smoothed(pending.smoothed[len(final):])]
        return final

    def close(self) -> FaceBatch:
        """Every frame still held, final: the video has ended."""
        if self.tau <= 0 or not self._pending:
            return FaceBatch.empty(self.num_labels)
        pending = FaceBatch.concatenate(self._pending, self.num_labels)
        self._pending = []
        return pending.with_smoothed(self._backward_pass(pending))

    def _forward_pass(self, batch: FaceBatch) -> np.ndarray:
        forward = np.empty(batch.probabilities.shape, np.float32)
        times = np.repeat(batch.pts_time, batch.faces_per_frame())
        for rows in _track_groups(batch.track_id, times):
            track = int(batch.track_id[rows[0]])
            start, start_time = self._forward.get(track, (None, None))
            forward[rows] = ema(times[rows], batch.probabilities[rows], self.tau, start=start, start_time=start_time)
            self._forward[track] = (forward[rows[-1]], float(times[rows[-1]]))
        return forward

    def _backward_pass(self, pending: FaceBatch) -> np.ndarray:
        """Backward over the held rows of each track, from its newest held row (its forward value there)."""
        smoothed = np.empty(pending.probabilities.shape, np.float32)
        times = np.repeat(pending.pts_time, pending.faces_per_frame())
        for rows in _track_groups(pending.track_id, times):
            smoothed[rows] = ema(-times[rows][::-1], pending.smoothed[rows][::-1], self.tau)[::-1]
        return smoothed
