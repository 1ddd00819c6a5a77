#!/usr/bin/python3
"""The camera of `emoray bench --only live`: an RTSP server on 127.0.0.1 sending one MP4 file's H.264,
looped forever at real-time pace, as a network camera would (the live tests use it too).

``pipeline/bench/camera.py`` (``RtspServer``) starts it with the *system* interpreter (it needs PyGObject
and GStreamer's RTSP server library, which `make system-deps` installs and which are not in the
project's virtual environment):

    /usr/bin/python3 pipeline/bench/gst_camera.py VIDEO.mp4 [--port 0]

When it is ready it prints exactly one line, ``READY rtsp://127.0.0.1:PORT/stream``, on stdout; every
other message goes to stderr. ``--port 0`` (the default) binds any free port; ``--port N`` binds N (a
camera started again after an outage keeps its URL). SIGTERM and SIGINT stop it cleanly (exit status 0).

How it behaves like a camera rather than like a file server:

- The video is sent as it is in the file (qtdemux ! h264parse ! rtph264pay), never re-encoded.
- One *source* pipeline plays the file, paced by the clock at the clip's frame rate, from the moment the
  first client asks for data (so that client's stream starts at once, with the file's first IDR frame,
  as a camera's stream starts with one), and from then on whether or not anyone is watching. Every
  client gets that one shared stream (``set_shared(True)``): a client that connects later joins at the
  live position, not at the start of the file, and its media starts at the next keyframe (so it
  decodes from its first frame on, after waiting up to one GOP).
- The file loops forever without a gap: the source pipeline uses segment seeks (a non-flushing seek back
  to the start on SEGMENT_DONE), and every access unit is placed on one endless timeline (pass number x
  the clip's presentation span + its time in the file), so the PTS/DTS and RTP timestamps a client sees
  keep increasing by exactly one frame across the loop boundary, and the pace never drifts.
- The RTSP media pipeline is ``appsrc ! rtph264pay name=pay0 pt=96``; the source pipeline hands each
  access unit to the appsrc of every media that is playing, re-timed into that pipeline's running time
  (PTS and DTS both, so B-frames keep their order). SPS/PPS reach clients in the SDP
  (sprop-parameter-sets). They are deliberately not repeated in-band (``config-interval=-1``): with that,
  FFmpeg 8 returned frames out of order and with duplicate timestamps at GOP boundaries for an
  x264-encoded clip with B-frames.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

try:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402
except (ImportError, ValueError) as exc:  # ValueError: "Namespace GstRtspServer not available"
    sys.exit(
        f"gst_camera.py: {exc}. Run it with /usr/bin/python3 after `make system-deps` "
        "(python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{base,good,bad})."
    )


def log(message: str) -> None:
    print(f"rtsp_server: {message}", file=sys.stderr, flush=True)


class EndlessTimeline:
    """Places each access unit of the looping file on one endless timeline: the pass number times the clip's
    period, plus its time in the file (nanoseconds from the first access unit).

    Our own loop arithmetic rather than the segments' running time: for files with an edit list (B-frames)
    GStreamer's accumulated segment base is off by up to a frame per loop, which gave two frames the same
    timestamp at the loop boundary and a clock that drifts from the clip's.
    """

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """Forget everything: the flushing seek that starts looping starts the timeline afresh."""
        self.loops = 0  # complete passes through the file
        self._loop_base = self._loop_length = 0
        self._pts_start = self._pts_end = self._decode_end = 0
        self._origin: int | None = None
        self._last_decode: int | None = None

    def place(self, pts: int | None, dts: int | None, decode: int, duration: int) -> tuple[int, int | None, int | None]:
        """(decode time, PTS, DTS) of the next access unit on the endless timeline (None where it has none)."""
        if self._last_decode is not None and decode < self._last_decode:
            self.loops += 1
            self._loop_base += self._loop_length
        self._last_decode = decode
        if self.loops == 0:  # the first pass measures the clip's period: its presentation span, or
            # its decode span where that is longer (frames cut by an edit list leave gaps in the DTS)
            shown = pts if pts is not None else decode
            if self._origin is None:
                self._origin, self._pts_start = decode, shown
            self._pts_start = min(self._pts_start, shown)
            self._pts_end = max(self._pts_end, shown + duration)
            self._decode_end = max(self._decode_end, decode + duration)
            self._loop_length = max(self._pts_end - self._pts_start, self._decode_end - self._origin)
        t_decode = self._loop_base + decode - self._origin
        t_pts = None if pts is None else self._loop_base + pts - self._origin
        t_dts = None if dts is None else self._loop_base + dts - self._origin
        return t_decode, t_pts, t_dts


class LoopingSource:
    """Plays the file's H.264 in a loop at real-time pace and fans each access unit out to the sinks."""

    def __init__(self, video: Path):
        self.video = video
        self.pipeline = Gst.Pipeline.new("source")
        filesrc = Gst.ElementFactory.make("filesrc")
        filesrc.set_property("location", str(video))
        self.demux = Gst.ElementFactory.make("qtdemux")
        self.queue = Gst.ElementFactory.make("queue")
        parse = Gst.ElementFactory.make("h264parse")
        self.appsink = Gst.ElementFactory.make("appsink")
        # sync=false: _on_new_sample paces the stream itself, on the endless timeline it computes.
        self.appsink.set_property("sync", False)
        self.appsink.set_property("emit-signals", True)
        self.appsink.set_property("max-buffers", 8)
        self.appsink.set_property(
            "caps", Gst.Caps.from_string("video/x-h264,stream-format=avc,alignment=au")
        )
        for element in (filesrc, self.demux, self.queue, parse, self.appsink):
            self.pipeline.add(element)
        filesrc.link(self.demux)
        self.queue.link(parse)
        parse.link(self.appsink)
        self.demux.connect("pad-added", self._on_pad_added)
        self.appsink.connect("new-sample", self._on_new_sample)
        self.appsink.get_static_pad("sink").add_probe(
            Gst.PadProbeType.EVENT_FLUSH, self._on_flush
        )
        self.error: str | None = None
        self.video_caps: str | None = None
        self.caps: Gst.Caps | None = None
        self.lock = threading.Lock()
        self.sinks: dict[int, dict] = {}  # id(appsrc) -> {"appsrc", "offset", "ready"}, one per media
        self.stopping = False
        self.timeline = EndlessTimeline()  # kept by the streaming thread only (see _on_new_sample)
        self.clock = Gst.SystemClock.obtain()  # the clock every pipeline of this process uses
        self._clock_zero: int | None = None
        self._flushed = False
        self._first_sample = threading.Event()  # set when the first access unit after the seek is seen
        self._first_is_keyframe = False
        self._first_client = threading.Event()  # set when the first media runs: the clip's clock starts

    # -- set-up --------------------------------------------------------------------------------------
    def _on_pad_added(self, _demux, pad: Gst.Pad) -> None:
        caps = pad.get_current_caps() or pad.query_caps(None)
        name = caps.get_structure(0).get_name()
        if not name.startswith("video/"):
            return  # audio and other tracks are not served
        self.video_caps = caps.to_string()
        if name != "video/x-h264":
            self.error = (
                f"{self.video} has {name} video, not H.264: this server sends the file's video "
                "as it is, without re-encoding, and only for H.264"
            )
            return
        sink = self.queue.get_static_pad("sink")
        if not sink.is_linked():
            pad.link(sink)

    def start(self) -> None:
        """Preroll, check the video is H.264, then loop it with segment seeks and play."""
        bus = self.pipeline.get_bus()
        self.pipeline.set_state(Gst.State.PAUSED)
        msg = bus.timed_pop_filtered(
            10 * Gst.SECOND, Gst.MessageType.ASYNC_DONE | Gst.MessageType.ERROR
        )
        if self.error:
            raise SystemExit(f"gst_camera.py: {self.error}")
        if msg is None:
            raise SystemExit(f"gst_camera.py: {self.video} did not preroll within 10 s")
        if msg.type == Gst.MessageType.ERROR:
            err, debug = msg.parse_error()
            if self.video_caps is None:
                raise SystemExit(f"gst_camera.py: {self.video} has no video track ({err.message})")
            raise SystemExit(f"gst_camera.py: cannot read {self.video}: {err.message} ({debug})")
        self.caps = self.appsink.get_static_pad("sink").get_current_caps()
        # A segment seek: at the end of the file the demuxer posts SEGMENT_DONE instead of sending EOS,
        # and the non-flushing seek we answer it with starts the next pass without a flush or a gap.
        self.pipeline.seek_simple(
            Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.SEGMENT | Gst.SeekFlags.KEY_UNIT, 0
        )
        bus.add_signal_watch()
        bus.connect("message", self._on_message)
        self.pipeline.set_state(Gst.State.PLAYING)
        if not self._first_sample.wait(10):
            self.stop()
            raise SystemExit(f"gst_camera.py: {self.video} played no video within 10 s")
        if not self._first_is_keyframe:
            self.stop()
            raise SystemExit(
                f"gst_camera.py: {self.video} does not start with an IDR frame (its first frame is "
                "an I-frame of an open GOP, or worse): an RTSP client such as FFmpeg would decode "
                "nothing from it. Re-encode it with IDR keyframes (e.g. with PyAV's libx264) first."
            )

    def describe(self) -> str:
        s = self.caps.get_structure(0)
        _, num, den = s.get_fraction("framerate")
        return f"{s.get_int('width')[1]}x{s.get_int('height')[1]} H.264 at {num}/{den} fps"

    def _on_message(self, _bus, msg: Gst.Message) -> None:
        if msg.type == Gst.MessageType.SEGMENT_DONE:
            self.pipeline.seek_simple(Gst.Format.TIME, Gst.SeekFlags.SEGMENT, 0)
        elif msg.type == Gst.MessageType.ERROR:
            err, debug = msg.parse_error()
            log(f"source pipeline error: {err.message} ({debug})")
            self.error = err.message
            MAIN_LOOP.quit()

    # -- fan-out -------------------------------------------------------------------------------------
    def add_sink(self, appsrc) -> None:
        appsrc.set_property("caps", self.caps)
        with self.lock:
            self.sinks[id(appsrc)] = {"appsrc": appsrc, "offset": None, "ready": False}

    def on_need_data(self, appsrc) -> None:
        """The media's appsrc runs (its pipeline is playing) and asks for data."""
        sink = self.sinks.get(id(appsrc))
        if sink is not None and not sink["ready"]:
            sink["ready"] = True
            self._first_client.set()

    def remove_sink(self, appsrc) -> None:
        with self.lock:
            self.sinks.pop(id(appsrc), None)

    def _on_flush(self, _pad, info) -> Gst.PadProbeReturn:
        if info.get_event().type == Gst.EventType.FLUSH_STOP:
            self._flushed = True  # the flushing seek that starts looping: the timeline starts afresh
        return Gst.PadProbeReturn.OK

    def _on_new_sample(self, appsink) -> Gst.FlowReturn:
        """Streaming thread: re-time one access unit onto the endless timeline, wait for it, fan it out."""
        buf = appsink.emit("pull-sample").get_buffer()
        pts = None if buf.pts == Gst.CLOCK_TIME_NONE else buf.pts
        dts = None if buf.dts == Gst.CLOCK_TIME_NONE else buf.dts
        decode = dts if dts is not None else pts
        if decode is None:
            return Gst.FlowReturn.OK  # an access unit without any timestamp cannot be placed in time
        fresh = self._flushed  # the first access unit after the seek that started the loop
        if self._flushed:
            self._flushed = False
            self.timeline.restart()
            self._clock_zero = None
        duration = 0 if buf.duration == Gst.CLOCK_TIME_NONE else buf.duration
        t_decode, t_pts, t_dts = self.timeline.place(pts, dts, decode, duration)  # ns on the endless timeline

        keyframe = not buf.has_flags(Gst.BufferFlags.DELTA_UNIT)
        if fresh:
            self._first_is_keyframe = keyframe
            self._first_sample.set()
            # The clip's clock starts with the first client, whose stream thus starts at once with the
            # file's first (IDR) frame, as a camera's stream starts with one; later clients join live.
            while not self.stopping and not self._first_client.wait(0.1):
                pass

        # Real-time pace: hand each access unit on when the clock reaches its decode time.
        if self._clock_zero is None:
            self._clock_zero = self.clock.get_time() - t_decode
        due = self._clock_zero + t_decode
        while not self.stopping:
            wait = due - self.clock.get_time()
            if wait <= 0:
                break
            time.sleep(min(wait / 1e9, 0.05))

        with self.lock:
            sinks = list(self.sinks.values())
        for sink in sinks:
            appsrc = sink["appsrc"]
            if not sink["ready"]:
                continue  # the media is not running yet: a camera's frames just go by
            if sink["offset"] is None:
                if not keyframe:
                    continue  # start every media at a keyframe, so that its first frame decodes
                # Maps the endless timeline onto this media pipeline's running time: now <-> t_decode.
                sink["offset"] = self.clock.get_time() - appsrc.get_base_time() - t_decode
            out_pts = None if t_pts is None else t_pts + sink["offset"]
            out_dts = None if t_dts is None else t_dts + sink["offset"]
            if (out_pts is not None and out_pts < 0) or (out_dts is not None and out_dts < 0):
                continue
            out = buf.copy()
            out.pts = Gst.CLOCK_TIME_NONE if out_pts is None else out_pts
            out.dts = Gst.CLOCK_TIME_NONE if out_dts is None else out_dts
            appsrc.emit("push-buffer", out)
        return Gst.FlowReturn.OK

    def stop(self) -> None:
        self.stopping = True
        self.pipeline.set_state(Gst.State.NULL)


class SharedFactory(GstRtspServer.RTSPMediaFactory):
    def __init__(self, source: LoopingSource):
        super().__init__()
        self.source = source
        self.set_launch(
            "( appsrc name=src is-live=true format=time leaky-type=downstream max-bytes=4000000 "
            "! rtph264pay name=pay0 pt=96 )"
        )
        self.set_shared(True)
        self.connect("media-configure", self._on_media_configure)

    def _on_media_configure(self, _factory, media) -> None:
        appsrc = media.get_element().get_by_name("src")
        self.source.add_sink(appsrc)
        appsrc.connect("need-data", lambda src, _length: self.source.on_need_data(src))
        media.connect("unprepared", lambda _media: self.source.remove_sink(appsrc))


MAIN_LOOP: GLib.MainLoop | None = None
HOST = "127.0.0.1"  # a local camera only: nothing outside this machine can reach it
MOUNT_PATH = "/stream"


def main(argv: list[str] | None = None) -> int:
    global MAIN_LOOP
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", type=Path, help="an MP4 (or MOV) file with H.264 video")
    parser.add_argument("--port", type=int, default=0, help="TCP port to bind; 0 = any free port (default)")
    args = parser.parse_args(argv)
    if not args.video.is_file():
        parser.error(f"{args.video} is not a file")

    Gst.init(None)
    MAIN_LOOP = GLib.MainLoop()
    source = LoopingSource(args.video.resolve())
    source.start()

    server = GstRtspServer.RTSPServer()
    server.set_address(HOST)
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(MOUNT_PATH, SharedFactory(source))
    if not server.attach(None) or server.get_bound_port() <= 0:  # attach() returns 0 when it cannot bind
        source.stop()
        raise SystemExit(f"gst_camera.py: cannot listen on {HOST}:{args.port} (in use?)")
    port = server.get_bound_port()

    def quit_loop() -> bool:
        MAIN_LOOP.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, quit_loop)
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, quit_loop)

    log(f"serving {args.video.name}: {source.describe()}, looped")
    print(f"READY rtsp://{HOST}:{port}{MOUNT_PATH}", flush=True)
    try:
        MAIN_LOOP.run()
    finally:
        source.stop()
    if source.error:
        return 1
    log(f"stopped after {source.timeline.loops} complete loops")
    return 0


if __name__ == "__main__":
    sys.exit(main())
