"""``emoray bench --only live --streams N``: N local RTSP cameras followed by one live session, beside one.

Each camera serves the same camera-like clip (640x360, 10 fps, a keyframe a second) from its own GStreamer
RTSP server on 127.0.0.1. One camera is followed first (the baseline), then N at once with the same models
object (one detector and one classifier batch a round). A third of the way into the N-camera run camera 0
is killed and started again ``outage`` seconds later (same port), so the run also shows whether the others
keep their rate while one reconnects. Per stream: frames received and processed (its share), drops,
reconnects, capture-to-result latency, and its processed rate during the outage against the rest of the
run; for the session, peak RSS of this process against the one-camera run.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from jobs.spec import LiveSourceOptions, ModelOptions
from pipeline.bench.camera import RtspServer, rtsp_server_missing
from pipeline.bench.live import LiveBenchError
from pipeline.bench.monitor import RssSampler
from pipeline.bench.report import format_number, text_table
from pipeline.inference import LocalModels
from pipeline.live import LiveSession, LiveSource
from pipeline.results import FaceBatch
from pipeline.samples import make_clip
from pipeline.sources.live import LiveReader

STREAM_FPS = 10
STREAM_SIZE = (640, 360)
READER_OPTIONS = LiveSourceOptions(timeout=2.0, max_retries=10)  # rides out the outage (backoff up to 8 s)


class _Arrivals:
    """A sink keeping, for one stream, when each result came (seconds since the session started)."""

    def __init__(self, started: float) -> None:
        self.started, self.times = started, []

    def write(self, batch: FaceBatch) -> None:
        self.times.append(time.monotonic() - self.started)

    def close(self) -> None:
        """Nothing buffered."""


def _follow(urls: list[str], models: LocalModels, options: ModelOptions, seconds: float,
            outage: tuple[RtspServer, float, float] | None = None) -> tuple[list[dict], list[list[float]], float]:
    """One session over ``urls`` for ``seconds``; per stream its stats and result times, and peak RSS (MB).
    ``outage``: (camera, at, for): that camera is killed ``at`` seconds in and started again ``for`` later."""
    started = time.monotonic()
    arrivals = [_Arrivals(started) for _ in urls]
    sources = [LiveSource(LiveReader(url, READER_OPTIONS), [sink], models, options, name=f"camera-{number}")
               for number, (url, sink) in enumerate(zip(urls, arrivals))]
    session = LiveSession(sources, models, options)
    stopper, outage_errors = None, []
    if outage is not None:
        camera, at, lasting = outage
        stopper = threading.Timer(at, _outage, args=(camera, lasting, outage_errors))
        stopper.start()
    with RssSampler() as rss:
        session.start()
        stats = session.run(duration=seconds)
    if stopper is not None:
        stopper.join()
    if outage_errors:
        raise LiveBenchError(f"the outage of {urls[0]} could not be staged: {outage_errors[0]}")
    failed = [s for s in stats if s.error or not s.processed]
    if failed:
        raise LiveBenchError(f"live run failed: {failed[0].source}: {failed[0].error or 'no frames processed'}")
    return [s.to_dict() for s in stats], [sink.times for sink in arrivals], rss.peak_mb


def _outage(camera: RtspServer, lasting: float, errors: list[str]) -> None:
    """Stop ``camera`` for ``lasting`` seconds; a failure is kept in ``errors`` for the bench to report."""
    try:
        camera.stop()
        time.sleep(lasting)
        camera.start()
    except Exception as error:  # noqa: BLE001 - any failure of the camera server ends the bench with its reason
        errors.append(f"{type(error).__name__}: {error}")


def _rate(times: list[float], start: float, end: float) -> float:
    """Results a second within [start, end)."""
    return sum(start <= t < end for t in times) / max(end - start, 1e-9)


def run_streams_bench(*, streams: int = 4, seconds: float = 45.0, outage_seconds: float = 6.0, workdir: Path,
                      device: str = "cpu", backend: str = "auto") -> dict:
    """One camera, then ``streams`` at once (camera 0 down for ``outage_seconds`` a third of the way in)."""
    missing = rtsp_server_missing()
    if missing:
        raise LiveBenchError(f"the streams bench needs local RTSP servers: {missing}")
    workdir.mkdir(parents=True, exist_ok=True)
    clip = workdir / f"camera-{STREAM_SIZE[0]}x{STREAM_SIZE[1]}-{STREAM_FPS}fps.mp4"
    if not clip.exists():
        make_clip(clip, width=STREAM_SIZE[0], height=STREAM_SIZE[1], seconds=16.0, fps=STREAM_FPS, camera_like=True)
    options = ModelOptions(device=device, backend=backend)
    models = LocalModels(options)
    cameras = [RtspServer(clip) for _ in range(streams)]
    try:
        urls = [camera.start() for camera in cameras]
        (one,), _, one_peak = _follow(urls[:1], models, options, seconds)
        at = seconds / 3
        stats, times, peak = _follow(urls, models, options, seconds, outage=(cameras[0], at, outage_seconds))
    finally:
        for camera in cameras:
            camera.close()
    outage_end = at + outage_seconds
    rows = []
    for stat, arrived in zip(stats, times):
        during = _rate(arrived, at, outage_end)
        outside = (sum(t < at or t >= outage_end for t in arrived)) / max(stat["seconds"] - outage_seconds, 1e-9)
        rows.append({"source": stat["source"], "received": stat["received"], "processed": stat["processed"],
                     "dropped": stat["dropped"], "reconnects": stat["reconnects"],
                     "processed_share": stat["processed"] / max(stat["received"], 1),
                     "p50_ms": stat["latency_ms"]["p50"], "p95_ms": stat["latency_ms"]["p95"],
                     "max_ms": stat["latency_ms"]["max"], "rate_in_outage": during, "rate_outside": outside})
    return {"streams": streams, "fps": STREAM_FPS, "resolution": f"{STREAM_SIZE[0]}x{STREAM_SIZE[1]}",
            "seconds": seconds, "outage": {"source": stats[0]["source"], "at_s": at, "seconds": outage_seconds},
            "one": {"processed_share": one["processed"] / max(one["received"], 1), "received": one["received"],
                    "processed": one["processed"], "p50_ms": one["latency_ms"]["p50"],
                    "p95_ms": one["latency_ms"]["p95"], "peak_rss_mb": one_peak},
            "rows": rows, "peak_rss_mb": peak, "peak_rss_vs_one": peak / one_peak,
            "others_rate_in_outage_vs_outside": _others_rate_ratio(rows[1:])}


def _others_rate_ratio(rows: list[dict]) -> float | None:
    """The worst ratio, over the cameras that stayed up, of their rate during the outage to their rate outside it."""
    ratios = [row["rate_in_outage"] / row["rate_outside"] for row in rows if row["rate_outside"] > 0]
    return float(np.min(ratios)) if ratios else None


def format_streams_report(result: dict) -> str:
    """Plain-text table of a ``run_streams_bench`` result."""
    one = result["one"]
    rows = [[r["source"], str(r["received"]), str(r["processed"]), f"{100 * r['processed_share']:.0f}%",
             str(r["dropped"]), str(r["reconnects"]), format_number(r["p50_ms"]), format_number(r["p95_ms"]),
             format_number(r["max_ms"]), format_number(r["rate_in_outage"], 2), format_number(r["rate_outside"], 2)]
            for r in result["rows"]]
    outage = result["outage"]
    ratio = result["others_rate_in_outage_vs_outside"]
    return "\n".join([
        f"{result['streams']} RTSP cameras at once ({result['resolution']}, {result['fps']} fps, {result['seconds']:.0f} s; "
        f"{outage['source']} down for {outage['seconds']:.0f} s from {outage['at_s']:.0f} s), latency capture to result, ms:",
        text_table(["source", "received", "processed", "share", "dropped", "reconnects", "p50", "p95", "max",
                    "fps in outage", "fps outside"], rows),
        f"one camera alone: {one['processed']} of {one['received']} processed ({100 * one['processed_share']:.0f}%), "
        f"p50 {one['p50_ms']:.1f} ms, p95 {one['p95_ms']:.1f} ms, peak RSS {one['peak_rss_mb']:.0f} MB",
        f"peak RSS with {result['streams']}: {result['peak_rss_mb']:.0f} MB ({result['peak_rss_vs_one']:.2f}x one camera); "
        + ("the other cameras' rate during the outage: at worst "
           f"{100 * ratio:.0f}% of their rate outside it" if ratio is not None else "")])
