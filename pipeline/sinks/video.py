"""Annotated MP4 out: the frames the pipeline processed, faces drawn, H.264, with the input's audio.

It streams (frames, face batches and audio packets one at a time), so a 2-hour video fits in little memory.
"""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import av
import cv2
import numpy as np
import pyarrow as pa

from jobs.files import move_into_place, temporary_prefix
from pipeline.annotate import draw_faces
from pipeline.errors import OutputError, VideoError
from pipeline.sinks.parquet import BOX_COLUMNS, FRAME_INDEX, TRACK_ID, probability_column
from pipeline.sources.file import VideoInfo, iter_frames, probe

MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "ac3", "eac3", "opus", "alac", "flac"})  # copied as they are
VIDEO_OPTIONS = {"preset": "veryfast", "crf": "23"}
_Run = tuple[int, np.ndarray, np.ndarray, np.ndarray]  # frame_index, boxes, probabilities, track ids


def write_annotated_video(
    source: Path,
    destination: Path,
    faces: Iterable[pa.RecordBatch],
    *,
    sample_fps: float | None,
    labels: Sequence[str],
) -> int:
    """Write ``source`` as an H.264 MP4 with every face of ``faces`` drawn on its frame.

    The frames are exactly those ``iter_frames(source, sample_fps=sample_fps)`` yields, in display
    orientation and at their original timestamps. The first audio track is copied unchanged when MP4 can
    hold its codec, else transcoded to AAC. The file appears at ``destination`` only once complete.

    Args:
        source: the video the faces were found in.
        destination: the MP4 to write; parent folders are created.
        faces: record batches of the faces table sorted by frame_index, with columns frame_index, x1, y1,
            x2, y2 (pixels of the display-oriented frame), track_id (null when untracked) and p_<label>
            for each label. Frames without rows are written undrawn.
        sample_fps: the sampling rate the pipeline decoded with; None for every frame.
        labels: the emotion vocabulary, in the order of its probability columns.

    Returns:
        The number of video frames written.

    Raises:
        VideoError: naming the file, when the source cannot be decoded or the output cannot be encoded.
        OutputError: when the destination folder cannot be created or written.
        ValueError: when ``faces`` lacks a column or is not sorted by frame_index.
    """
    source, destination = Path(source), Path(destination)
    info = probe(source)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=temporary_prefix(destination.name), suffix=".part", dir=destination.parent)
        os.close(handle)
    except OSError as error:
        raise OutputError(f"{destination.parent}: cannot write the annotated video there ({error})") from error
    temporary = Path(name)
    try:
        with (
            av.open(str(source), metadata_errors="ignore") as input_container,
            av.open(str(temporary), "w", format="mp4", options={"movflags": "+faststart"}) as output,
        ):
            count = _encode(input_container, output, faces, info, sample_fps=sample_fps, labels=labels)
        move_into_place(temporary, destination)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, (av.error.FFmpegError, OSError)):
            raise VideoError(f"{destination}: cannot write the annotated video of {source} ({error})") from error
        raise
    return count


def _encode(
    input_container: av.container.InputContainer,
    output: av.container.OutputContainer,
    faces: Iterable[pa.RecordBatch],
    info: VideoInfo,
    *,
    sample_fps: float | None,
    labels: Sequence[str],
) -> int:
    """Decode, draw and encode every processed frame, copying audio up to each frame's time as it goes."""
    in_video = input_container.streams.video[0]
    time_base = in_video.time_base
    rate = in_video.average_rate or in_video.guessed_rate or Fraction(30)
    if sample_fps is not None and sample_fps < rate:
        rate = Fraction(sample_fps).limit_denominator(1001)
    video = output.add_stream(
        "libx264", rate=rate, options=dict(VIDEO_OPTIONS), time_base=time_base, pix_fmt="yuv420p",
        width=info.width + info.width % 2, height=info.height + info.height % 2,  # 4:2:0 needs even sizes
    )
    audio = _AudioCopy(input_container, output) if input_container.streams.audio else None
    groups = _faces_by_frame(faces, labels)
    group, count, pts = next(groups, None), 0, None
    for decoded in iter_frames(info.path, sample_fps=sample_fps):
        runs = []
        while group is not None and group[0] <= decoded.index:  # rows of frames not decoded are passed over
            if group[0] == decoded.index:
                runs.append(group[1:])
            group = next(groups, None)
        image = decoded.to_rgb(info.rotation)
        if runs:
            boxes, probabilities, track_ids = (np.concatenate(arrays) for arrays in zip(*runs))
            image = draw_faces(image, boxes, probabilities, labels, track_ids)
        if image.shape[0] % 2 or image.shape[1] % 2:
            image = cv2.copyMakeBorder(image, 0, image.shape[0] % 2, 0, image.shape[1] % 2, cv2.BORDER_REPLICATE)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        original = decoded.frame.pts if decoded.frame.pts is not None else round(decoded.pts_time / time_base)
        frame.pts = pts = original if pts is None else max(original, pts + 1)  # the muxer needs rising pts
        frame.time_base = time_base
        if audio is not None:
            audio.write_until(float(pts * time_base))
        output.mux(video.encode(frame))
        count += 1
    output.mux(video.encode(None))
    if audio is not None:
        audio.finish()
    return count


class _AudioCopy:
    """The input's first audio track into the output: packets remuxed, or transcoded to AAC."""

    def __init__(self, input_container: av.container.InputContainer, output: av.container.OutputContainer):
        self._input, self._output = input_container.streams.audio[0], output
        context = self._input.codec_context
        self._remux = context.codec.canonical_name in MP4_AUDIO_CODECS
        if self._remux:
            self._stream = output.add_stream_from_template(self._input)
        else:
            self._stream = output.add_stream("aac", rate=context.sample_rate, layout=context.layout.name)
        self._packets = input_container.demux(self._input)
        self._pending: av.Packet | None = next(self._packets, None)

    def write_until(self, seconds: float) -> None:
        """Copy the packets that start at or before ``seconds`` of stream time."""
        while (packet := self._pending) is not None and (
            packet.dts is None or float(packet.dts * packet.time_base) <= seconds
        ):
            if not self._remux:  # an empty packet at the end flushes the decoder
                self._output.mux([out for frame in self._input.decode(packet) for out in self._stream.encode(frame)])
            elif packet.dts is not None:
                packet.stream = self._stream
                self._output.mux(packet)
            self._pending = next(self._packets, None)

    def finish(self) -> None:
        """Copy the remaining packets and flush the AAC encoder."""
        self.write_until(float("inf"))
        if not self._remux:
            self._output.mux(self._stream.encode(None))


def _faces_by_frame(batches: Iterable[pa.RecordBatch], labels: Sequence[str]) -> Iterator[_Run]:
    """Runs of rows of one frame, in order: frame_index, (n, 4) boxes, (n, k) probabilities, (n,) track ids.

    A track id is -1 where the face has none. A frame's rows may come as two runs when they span batches.
    """
    probability_columns = [probability_column(label) for label in labels]
    columns = [FRAME_INDEX, *BOX_COLUMNS, TRACK_ID, *probability_columns]
    last = -1
    for batch in filter(lambda batch: batch.num_rows > 0, batches):
        missing = [name for name in columns if name not in batch.schema.names]
        if missing:
            raise ValueError(f"faces batches must have columns {columns}, but lack {missing}")
        index = batch.column(FRAME_INDEX).to_numpy(zero_copy_only=False).astype(np.int64)
        if index[0] < last or np.any(np.diff(index) < 0):
            raise ValueError("faces batches must be sorted by frame_index, but an index goes down")
        boxes, probabilities = _stack(batch, BOX_COLUMNS), _stack(batch, probability_columns)
        track_ids = batch.column(TRACK_ID).cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False)
        bounds = [0, *(np.flatnonzero(np.diff(index)) + 1).tolist(), len(index)]
        for start, end in zip(bounds, bounds[1:]):
            yield int(index[start]), boxes[start:end], probabilities[start:end], track_ids[start:end]
        last = int(index[-1])


def _stack(batch: pa.RecordBatch, names: Sequence[str]) -> np.ndarray:
    return np.stack([batch.column(name).to_numpy(zero_copy_only=False) for name in names], axis=1).astype(np.float32)
