"""Live sources (RTSP cameras, other streams PyAV opens, files): the newest frame, or every frame of a file.

A reader thread decodes the stream as it arrives and keeps exactly one frame, the newest. A consumer
that is slower than the camera takes the newest frame when it is ready; the frames it never saw are
counted as dropped, never queued, so latency cannot build up. A file played without ``realtime`` has
no newer frame to prefer: the reader waits for each frame to be taken, so every frame is processed,
in order (a recorded session replays exactly, with the indices and times batch mode gives them). When the stream drops or cannot be
reached the reader reconnects with capped exponential backoff, and gives up with a clear error
after ``max_retries`` failed attempts in a row. Every socket operation has a timeout, so a frozen
camera cannot hang the reader.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import av

from jobs.spec import LiveSourceOptions
from models.errors import EmorayError
from pipeline.errors import VideoError
from pipeline.sources.file import DecodedFrame, VideoInfo, iter_frames, probe

log = logging.getLogger(__name__)

STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp"})


class LiveSourceError(EmorayError, ConnectionError):
    """A live source cannot be read: unreachable, refused, not a video, or it kept failing."""


@dataclass
class LiveFrame:
    """The newest decoded frame and when it was captured (wall clock, seconds since the epoch)."""

    sequence: int  # 0-based count of frames received from this source, across reconnects
    capture_time: float
    decoded: DecodedFrame


def redact(url: str) -> str:
    """The URL without its password, fit for logs and output files."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def is_stream(source: str) -> bool:
    """True for network URLs and capture devices; False for files on disk."""
    return urlsplit(source).scheme.lower() in STREAM_SCHEMES or source.startswith("/dev/video")


class LiveReader:
    """Reads a live source in a background thread and hands on only its newest frame.

    Use as a context manager, or call ``start()`` and ``close()``. ``take()`` returns the next frame
    newer than the last one taken, or None once the source has ended (then ``error`` says why, if
    it failed). Counters: ``received``, ``dropped`` (decoded but never taken), ``reconnects``.
    """

    def __init__(self, source: str, options: LiveSourceOptions = LiveSourceOptions()) -> None:
        self.source, self.options = source, options
        self.name = redact(source)
        self.stream = is_stream(source)
        if not self.stream and not Path(source).exists():
            raise LiveSourceError(f"{source}: no such file, and not a stream URL ({', '.join(sorted(STREAM_SCHEMES))})")
        info = None if self.stream else probe(source)
        self.rotation = info.rotation if info else 0
        self.fps = info.fps if info else None  # a stream's rate is not known up front
        self.every_frame = not self.stream and not options.realtime
        self.received = self.dropped = self.reconnects = 0
        self.error: LiveSourceError | None = None
        self._newest: LiveFrame | None = None
        self._taken = True
        self._ended = False
        self._condition = threading.Condition()
        self._stopping = threading.Event()
        self.ready: threading.Event | None = None  # set whenever a frame comes or the source ends (a session's)
        self._thread = threading.Thread(target=self._run, name=f"emoray-live-reader {self.name}", daemon=True)

    def __enter__(self) -> "LiveReader":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop reading; a pending ``take()`` returns None."""
        self._stopping.set()
        with self._condition:
            self._condition.notify_all()
        self._thread.join(timeout=self.options.timeout + 1.0)

    def take(self, timeout: float | None = None) -> LiveFrame | None:
        """The newest frame not yet taken; waits for one. None when the source ended or ``timeout`` passed."""
        with self._condition:
            self._condition.wait_for(lambda: not self._taken or self._ended or self._stopping.is_set(), timeout)
            if self._taken:
                return None
            self._taken = True
            self._condition.notify_all()  # an every-frame reader waits for this
            return self._newest

    @property
    def ended(self) -> bool:
        return self._ended

    def _publish(self, decoded: DecodedFrame) -> None:
        with self._condition:
            if self.every_frame:  # wait for the consumer: nothing is dropped
                self._condition.wait_for(lambda: self._taken or self._stopping.is_set())
            if not self._taken:
                self.dropped += 1
            self._newest = LiveFrame(self.received, time.time(), decoded)
            self._taken = False
            self.received += 1
            self._condition.notify_all()
        if self.ready is not None:
            self.ready.set()

    def _open(self) -> av.container.InputContainer:
        # start at once, buffer nothing, never wait on a socket longer than the timeout
        microseconds = str(int(self.options.timeout * 1e6))
        options = {"probesize": "32", "analyzeduration": "0", "fflags": "nobuffer", "flags": "low_delay"}
        if urlsplit(self.source).scheme.lower() in ("rtsp", "rtsps"):
            options |= {"rtsp_transport": self.options.rtsp_transport, "timeout": microseconds}
        else:
            options |= {"rw_timeout": microseconds}
        container = av.open(self.source, options=options, timeout=(self.options.timeout, self.options.timeout))
        if not container.streams.video:
            container.close()
            raise LiveSourceError(f"{self.name}: has no video stream")
        return container

    def _read(self, container: av.container.InputContainer) -> None:
        """Decode until the stream ends (a server that dies makes decoding simply end)."""
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"  # frame threads would add a frame of latency per thread
        for frame in container.decode(stream):
            if self._stopping.is_set():
                return
            pts_time = float(frame.time) if frame.time is not None else 0.0
            self._publish(DecodedFrame(self.received, pts_time, frame))

    def _run(self) -> None:
        error: LiveSourceError | None = LiveSourceError(f"{self.name}: the reader stopped unexpectedly")
        try:  # whatever happens, the consumer learns that the source ended, and why
            error = self._follow_stream() if self.stream else self._read_file()
        except VideoError as failure:
            error = LiveSourceError(str(failure))
        finally:
            self._finish(error)

    def _read_file(self) -> None:
        """Decode a file from its start (paced at its frame rate when ``realtime``)."""
        frames = iter_frames(self.source)
        started = None
        try:
            for decoded in frames:
                if self.options.realtime:
                    started = started if started is not None else time.monotonic() - decoded.pts_time
                    self._stopping.wait(max(0.0, started + decoded.pts_time - time.monotonic()))
                if self._stopping.is_set():
                    return None
                self._publish(DecodedFrame(self.received, decoded.pts_time, decoded.frame))
        finally:
            frames.close()
        return None

    def _follow_stream(self) -> LiveSourceError | None:
        """Read the stream, reconnecting with backoff; the error it gave up with, or None when stopped."""
        failures, opened_before, last_error = 0, False, "no frames"
        while not self._stopping.is_set():
            try:
                with self._open() as container:
                    if opened_before:
                        self.reconnects += 1
                        log.warning("%s: reconnected", self.name)
                    opened_before = True
                    received = self.received
                    self._read(container)
                    if self.received > received:
                        failures = 0
                    last_error = "the stream ended"
            except LiveSourceError as error:
                return error
            except (av.error.FFmpegError, OSError, ValueError) as error:
                last_error = str(error) or type(error).__name__
                log.warning("%s: %s", self.name, last_error)
            if self._stopping.is_set():
                break
            failures += 1
            if failures > self.options.max_retries:
                return LiveSourceError(f"{self.name}: gave up after {self.options.max_retries} retries: {last_error}")
            delay = min(self.options.backoff_max, self.options.backoff_initial * 2 ** (failures - 1))
            log.warning("%s: retry %d of %d in %.1f s", self.name, failures, self.options.max_retries, delay)
            self._stopping.wait(delay)
        return None

    def _finish(self, error: LiveSourceError | None) -> None:
        with self._condition:
            self.error, self._ended = error, True
            self._condition.notify_all()
        if self.ready is not None:
            self.ready.set()


def live_info(frame: LiveFrame, reader: LiveReader) -> VideoInfo:
    """What the pipeline needs to know about a live source, from its first frame."""
    decoded = frame.decoded.frame
    width, height = (decoded.width, decoded.height) if reader.rotation % 180 == 0 else (decoded.height, decoded.width)
    return VideoInfo(path=reader.name, width=width, height=height, fps=None, frame_count=None, duration=None,
                     codec="", rotation=reader.rotation, has_audio=False, is_image=False)
