"""Annotated videos: drawing on a frame, and MP4s that play with the processed frames, their timing and audio."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import av
import numpy as np
import pyarrow as pa
import pytest

from pipeline.annotate import EMOTION_COLORS, draw_faces
from pipeline.errors import OutputError, VideoError
from pipeline.sinks.video import write_annotated_video
from pipeline.sources.file import iter_frames, probe
from tests.conftest import shared

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
HAPPY = np.array([[0.02, 0.01, 0.02, 0.9, 0.02, 0.01, 0.02]])
BOX = (200.0, 40.0, 400.0, 300.0)  # on the 640x360 clip


def mock_faces(
    frame_indices: Sequence[int], *, faces_per_frame: int = 1, batch_rows: int = 64, box: Sequence[float] = BOX
) -> Iterator[pa.RecordBatch]:
    """Face rows sorted by frame_index, ``batch_rows`` per batch: all happy, the first at ``box``, the next
    ones each 220 pixels further right."""
    index = np.repeat(np.asarray(frame_indices, np.int64), faces_per_frame)
    shift = np.tile(np.arange(faces_per_frame) * 220.0, len(frame_indices))
    for start in range(0, len(index), batch_rows):
        rows, right = index[start : start + batch_rows], shift[start : start + batch_rows]
        columns = {"frame_index": rows, "track_id": pa.array([7] * len(rows), pa.int64())}
        columns.update({name: value + right * (name[0] == "x") for name, value in zip(("x1", "y1", "x2", "y2"), box)})
        columns.update({f"p_{label}": np.full(len(rows), HAPPY[0, k]) for k, label in enumerate(LABELS)})
        yield pa.RecordBatch.from_pydict(columns)


@dataclass
class Written:
    """What a player sees in a written file."""

    pts_times: list[float]  # seconds from the video stream's start
    frames: dict[int, np.ndarray]  # RGB of the frames asked for, by position
    width: int
    height: int
    duration: float
    audio_codec: str | None


def read_written(path: Path, keep: Sequence[int] = (0,)) -> Written:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        origin = stream.start_time or 0
        pts_times, frames = [], {}
        for position, frame in enumerate(container.decode(stream)):
            pts_times.append(float((frame.pts - origin) * stream.time_base))
            if position in keep:
                frames[position] = frame.to_ndarray(format="rgb24")
        audio = container.streams.audio[0].codec_context.codec.canonical_name if container.streams.audio else None
        return Written(
            pts_times, frames, stream.codec_context.width, stream.codec_context.height,
            container.duration / av.time_base, audio,
        )


def tiny_clip(path: Path, *, width: int = 33, height: int = 17, frames: int = 12, fps: int = 12) -> Path:
    """An odd-sized H.264 4:4:4 clip with PCM audio, a codec MP4 players do not take."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps, width=width, height=height, pix_fmt="yuv444p")
        audio = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        samples = 8000 // fps
        for i in range(frames):
            image = np.zeros((height, width, 3), np.uint8)
            image[..., 1] = 20 * i
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(video.encode(frame))
            tone = (np.sin(np.arange(samples) / 5) * 8000).astype(np.int16)[None]
            sound = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
            sound.sample_rate, sound.pts, sound.time_base = 8000, i * samples, Fraction(1, 8000)
            container.mux(audio.encode(sound))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    return path


@pytest.fixture(scope="module")
def every_frame(tmp_path_factory) -> tuple[Path, Path, int]:
    """WolfgangLanger (AAC audio) written with one face on every frame, into folders that do not exist yet."""
    source = shared("videos/WolfgangLanger_Pexels.mp4")
    indices = [decoded.index for decoded in iter_frames(source)]
    destination = tmp_path_factory.mktemp("out") / "annotated" / "nested" / "clip.mp4"
    count = write_annotated_video(source, destination, mock_faces(indices), sample_fps=None, labels=LABELS)
    assert count == len(indices)
    return source, destination, count


def test_every_frame_is_written_with_the_audio_and_duration_of_the_source(every_frame):
    source, destination, count = every_frame
    written = read_written(destination)
    info = probe(source)
    assert len(written.pts_times) == count == info.frame_count
    assert (written.width, written.height) == (info.width, info.height)
    assert written.audio_codec == "aac"
    assert written.duration == pytest.approx(info.duration, abs=0.1)
    assert sorted(path.name for path in destination.parent.iterdir()) == ["clip.mp4"]  # no temporary left


def test_drawn_box_shows_and_the_rest_of_the_picture_is_the_source(every_frame):
    source, destination, _ = every_frame
    original = next(iter_frames(source)).to_rgb(0).astype(np.int16)
    drawn = read_written(destination).frames[0].astype(np.int16)
    x1, y1, x2, y2 = (int(value) for value in BOX)
    top_edge = np.abs(drawn[y1, x1 + 20 : x2 - 20] - original[y1, x1 + 20 : x2 - 20]).mean()
    assert top_edge > 40
    assert np.abs(drawn[y1, x1 + 20 : x2 - 20] - EMOTION_COLORS["happy"]).mean() < 25
    far_away = np.abs(drawn[320:, :150] - original[320:, :150]).mean()  # H.264 noise only
    assert far_away < 4


def test_sampled_frames_keep_their_timestamps_and_each_gets_its_own_faces(tmp_path):
    source = shared("videos/WolfgangLanger_Pexels.mp4")
    sampled = list(iter_frames(source, sample_fps=5))
    with_faces = [decoded.index for decoded in sampled[::2]]
    faces = mock_faces(with_faces, faces_per_frame=2, batch_rows=3)  # batches: 0 0 2 | 2 4 4 | ...
    count = write_annotated_video(source, tmp_path / "out.mp4", faces, sample_fps=5, labels=LABELS)
    written = read_written(tmp_path / "out.mp4", keep=(1, 2))
    assert count == len(sampled) == len(written.pts_times)
    frame_time = 1 / probe(source).fps
    assert np.abs(np.array(written.pts_times) - [decoded.pts_time for decoded in sampled]).max() < frame_time
    assert written.audio_codec == "aac"
    for x1 in (200, 420):  # the left edges of frame 2's faces, whose rows span two batches, below their bars
        assert np.abs(written.frames[2][150:280, x1].astype(np.int16) - EMOTION_COLORS["happy"]).mean() < 25
    undrawn = np.abs(written.frames[1].astype(np.int16) - sampled[1].to_rgb(0)).mean()
    assert undrawn < 4  # frame 1 has no rows: only H.264 noise


def test_a_video_without_audio_gives_one_without_audio(tmp_path):
    source = shared("videos/two_faces.mp4")
    count = write_annotated_video(source, tmp_path / "out.mp4", [], sample_fps=None, labels=LABELS)
    written = read_written(tmp_path / "out.mp4")
    assert count == len(written.pts_times) == probe(source).frame_count
    assert written.audio_codec is None


def test_odd_frame_size_is_padded_and_pcm_audio_becomes_aac(tmp_path):
    source = tiny_clip(tmp_path / "tiny.mov")
    faces = mock_faces(range(12), box=(3, 2, 20, 14))
    count = write_annotated_video(source, tmp_path / "out.mp4", faces, sample_fps=None, labels=LABELS)
    written = read_written(tmp_path / "out.mp4")
    assert count == len(written.pts_times) == 12
    assert (written.width, written.height) == (34, 18)
    assert written.audio_codec == "aac"
    assert written.duration == pytest.approx(1.0, abs=0.1)


def test_a_failed_write_leaves_no_file(tmp_path):
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("not a video\n")
    with pytest.raises(VideoError, match="notes.mp4"):
        write_annotated_video(not_a_video, tmp_path / "out.mp4", [], sample_fps=None, labels=LABELS)
    unsorted = [*mock_faces([5]), *mock_faces([2])]
    with pytest.raises(ValueError, match="sorted by frame_index"):
        write_annotated_video(tiny_clip(tmp_path / "tiny.mov"), tmp_path / "out.mp4", unsorted, sample_fps=None,
                              labels=LABELS)
    with pytest.raises(OutputError, match="notes.mp4"):  # a file where the output folder should be
        write_annotated_video(tmp_path / "tiny.mov", not_a_video / "out.mp4", [], sample_fps=None, labels=LABELS)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.mp4", "tiny.mov"]


def test_draw_faces_draws_on_a_copy_with_label_inside_the_frame_and_bars_beside_the_box():
    image = np.full((270, 480, 3), 128, np.uint8)
    boxes = np.array([[20.0, 0.0, 120.0, 100.0], [400.0, 150.0, 479.0, 250.0]])
    drawn = draw_faces(image, boxes, np.repeat(HAPPY, 2, axis=0), LABELS, np.array([3, -1]))
    assert (image == 128).all()
    happy = (drawn == EMOTION_COLORS["happy"]).all(axis=-1)
    assert happy[:12, 20:60].mean() > 0.3  # label of the box at the top edge: just inside it
    assert (drawn[:100, 121:180] == 64).all(axis=-1).any()  # bars to the right, on a darkened panel
    assert (drawn[150:250, 300:399] == 64).all(axis=-1).any()  # no room on the right: bars to the left
    assert (drawn[200:, :300] == 128).all()  # nothing drawn elsewhere


@pytest.mark.parametrize(
    ("image", "xyxy", "probabilities", "message"),
    [
        (np.zeros((10, 10), np.uint8), np.zeros((0, 4)), np.zeros((0, 7)), r"image .* shape \(_, _, 3\)"),
        (np.zeros((10, 10, 3), np.float32), np.zeros((0, 4)), np.zeros((0, 7)), "uint8"),
        (np.zeros((10, 10, 3), np.uint8), np.zeros((1, 5)), np.zeros((1, 7)), r"xyxy .* \(_, 4\)"),
        (np.zeros((10, 10, 3), np.uint8), np.zeros((1, 4)), np.zeros((1, 6)), r"probabilities .* \(1, 7\)"),
    ],
)
def test_draw_faces_rejects_wrong_shapes(image, xyxy, probabilities, message):
    with pytest.raises(ValueError, match=message):
        draw_faces(image, xyxy, probabilities, LABELS)
