"""Splitting long videos into keyframe-aligned segments that decode independently, in parallel."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from pipeline.sources.file import VideoInfo


@dataclass(frozen=True)
class Segment:
    """Frames with presentation time in [start_time, end_time); the first has stream index first_index."""

    number: int
    start_time: float
    end_time: float
    first_index: int


def plan_segments(path: Path, info: VideoInfo, *, segment_seconds: float) -> list[Segment]:
    """One segment for short videos; for long ones, segments of about ``segment_seconds`` that start on keyframes.

    Long videos are demuxed once (no decoding) to find keyframes and count the frames before each,
    so every segment knows the exact stream index of its first frame.
    """
    whole = [Segment(0, 0.0, math.inf, 0)]
    if info.is_image or info.duration is None or info.duration <= 1.5 * segment_seconds:
        return whole
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        time_base = stream.time_base or Fraction(1, 1_000_000)
        origin = float(stream.start_time * time_base) if stream.start_time is not None else 0.0
        presentation_times, keyframes = [], []
        try:
            for packet in container.demux(stream):
                if packet.pts is None or packet.size == 0:
                    continue
                pts_time = float(packet.pts * time_base) - origin
                presentation_times.append(pts_time)
                if packet.is_keyframe:
                    keyframes.append(pts_time)
        except av.error.FFmpegError:
            pass  # a damaged tail: plan over what could be read
    starts = [0.0]
    for keyframe in sorted(keyframes):
        if keyframe - starts[-1] >= segment_seconds and info.duration - keyframe >= segment_seconds / 2:
            starts.append(keyframe)
    if len(starts) == 1:
        return whole
    presentation_times.sort()
    segments = []
    for number, start in enumerate(starts):
        end = starts[number + 1] if number + 1 < len(starts) else math.inf
        first_index = bisect.bisect_left(presentation_times, start - 1e-6)
        segments.append(Segment(number, start, end, first_index))
    return segments
