"""``emoray bench --only live``: capture-to-result latency of live mode against a local RTSP server.

For each resolution a camera-like clip (no B-frames, a keyframe a second) is served in a loop by
GStreamer's RTSP server on 127.0.0.1 at its frame rate, and live mode follows it for a while. The
bare cost of one frame (detector plus classifier calls only, in this process) is measured on the
same frames first, so the latency can be read against it. A longer run at the first resolution
checks that neither latency nor memory grows: p95 of its first and second halves, and this
process's RSS once the first Parquet parts are written (20 s) and at the end.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from models.errors import EmorayError
from pipeline.bench.report import format_number, text_table
from jobs.spec import LiveSourceOptions, ModelOptions
from pipeline.bench.camera import RtspServer, rtsp_server_missing
from pipeline.bench.monitor import RssSampler
from pipeline.faces import FaceStep
from pipeline.inference import LocalModels
from pipeline.live import LiveSession, LiveSource
from pipeline.results import FaceBatch
from pipeline.samples import make_clip
from pipeline.sinks.live_parquet import RollingPartsWriter
from pipeline.sources.file import iter_frames, probe
from pipeline.sources.live import LiveReader

LIVE_RESOLUTIONS: tuple[tuple[int, int], ...] = ((640, 360), (1280, 720))
FPS = 25
BARE_FRAMES = 40
ROLL_SECONDS = 10.0
RSS_SETTLE_S = 2 * ROLL_SECONDS  # the first Parquet part sets up pyarrow's writer and memory pool: a one-off step


class LiveBenchError(EmorayError, RuntimeError):
    """The live bench cannot run here (no RTSP server) or measured nothing."""


def _camera_clip(workdir: Path, size_wh: tuple[int, int]) -> Path:
    path = workdir / f"camera-{size_wh[0]}x{size_wh[1]}-{FPS}fps.mp4"
    if not path.exists():
        make_clip(path, width=size_wh[0], height=size_wh[1], seconds=16.0, fps=FPS, camera_like=True)
    return path


def _bare_models_ms(models: LocalModels, clip: Path, options: ModelOptions) -> float:
    """Median time of the face step alone (resize, detect, crop, classify) for one frame of ``clip``."""
    step = FaceStep(models, probe(clip), det_size=options.det_size, min_face=options.min_face)
    times = []
    frames = iter_frames(str(clip))
    try:
        for decoded in frames:
            if decoded.index >= BARE_FRAMES:
                break
            started = time.perf_counter()
            step([decoded])
            times.append((time.perf_counter() - started) * 1000)
    finally:
        frames.close()
    return statistics.median(times)


class _Timeline:
    """A sink that keeps (seconds since start, latency ms) of every result."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.points: list[tuple[float, float]] = []

    def write(self, batch: FaceBatch) -> None:
        self.points.append((time.monotonic() - self.started, float(batch.latency_ms[0])))

    def close(self) -> None:
        pass


def _follow(url: str, models: LocalModels, options: ModelOptions, seconds: float, out: Path) -> tuple[dict, list, list]:
    """Run live mode on ``url`` for ``seconds``; stats, (elapsed, latency) pairs, and (elapsed, RSS MB) samples."""
    reader = LiveReader(url, LiveSourceOptions(timeout=5.0, max_retries=3))
    writer = RollingPartsWriter(out, reader.name, models.labels, {"bench": True}, roll_seconds=ROLL_SECONDS)
    timeline = _Timeline()
    session = LiveSession([LiveSource(reader, [writer, timeline], models, options)], models, options)
    with RssSampler() as rss:
        session.start()
        (stats,) = session.run(duration=seconds)
    if stats.error or not stats.processed:
        raise LiveBenchError(f"live run on {url} failed: {stats.error or 'no frames processed'}")
    return stats.to_dict(), timeline.points, [(at - (timeline.started - rss.started), mb) for at, mb in rss.samples]


def run_live_bench(*, resolutions: Sequence[tuple[int, int]] = LIVE_RESOLUTIONS, seconds: float = 20.0,
                   long_seconds: float = 60.0, workdir: Path, device: str = "cpu",
                   backend: str = "auto") -> dict:
    """Latency p50/p95/max per resolution, against the bare per-frame model time, and a growth check."""
    missing = rtsp_server_missing()
    if missing:
        raise LiveBenchError(f"the live bench needs a local RTSP server: {missing}")
    workdir.mkdir(parents=True, exist_ok=True)
    options = ModelOptions(device=device, backend=backend)
    models = LocalModels(options)
    rows = []
    growth = None
    with tempfile.TemporaryDirectory(dir=workdir, prefix="live-") as scratch:
        for number, size in enumerate(resolutions):
            clip = _camera_clip(workdir, tuple(size))
            bare_ms = _bare_models_ms(models, clip, options)
            run_seconds = long_seconds if number == 0 and long_seconds > seconds else seconds
            with RtspServer(clip) as server:
                stats, timeline, rss = _follow(server.url, models, options, run_seconds, Path(scratch) / f"{number}")
            latency = stats["latency_ms"]
            rows.append({"resolution": f"{size[0]}x{size[1]}", "seconds": stats["seconds"], "received": stats["received"],
                         "processed": stats["processed"], "dropped": stats["dropped"], "faces": stats["faces"],
                         "bare_models_ms": bare_ms, "p50_ms": latency["p50"], "p95_ms": latency["p95"],
                         "max_ms": latency["max"], "p95_vs_bare": latency["p95"] / bare_ms})
            if number == 0:
                growth = _growth(timeline, rss, stats["seconds"])
    return {"fps": FPS, "rows": rows, "growth": growth}


def _growth(timeline: list[tuple[float, float]], rss: list[tuple[float, float]], seconds: float) -> dict:
    """Latency p95 of the first and second halves of a run, and RSS after settling against at the end."""
    half = seconds / 2
    first = [latency for at, latency in timeline if at < half]
    second = [latency for at, latency in timeline if at >= half]
    settled = [mb for at, mb in rss if at >= min(RSS_SETTLE_S, half)]
    return {"seconds": seconds,
            "p95_first_half_ms": float(np.percentile(first, 95)) if first else None,
            "p95_second_half_ms": float(np.percentile(second, 95)) if second else None,
            "rss_settled_mb": settled[0] if settled else None, "rss_end_mb": rss[-1][1] if rss else None}


def format_live_report(result: dict) -> str:
    """Plain-text table of a ``run_live_bench`` result."""
    rows = [[r["resolution"], format_number(r["seconds"]), str(r["received"]), str(r["processed"]), str(r["dropped"]),
             format_number(r["bare_models_ms"]), format_number(r["p50_ms"]), format_number(r["p95_ms"]), format_number(r["max_ms"]), format_number(r["p95_vs_bare"], 2)]
            for r in result["rows"]]
    lines = [f"Live mode against a local RTSP server ({result['fps']} fps camera-like H.264 clip, looped), "
             "latency = capture (decoded) to result, ms:",
             text_table(["resolution", "seconds", "received", "processed", "dropped", "bare models", "p50", "p95", "max",
                     "p95/bare"], rows)]
    g = result["growth"]
    if g:
        lines.append(f"growth over {g['seconds']:.0f} s at {result['rows'][0]['resolution']}: latency p95 first half "
                     f"{g['p95_first_half_ms']:.1f} ms, second half {g['p95_second_half_ms']:.1f} ms; RSS "
                     f"{g['rss_settled_mb']:.0f} MB after {RSS_SETTLE_S:.0f} s, {g['rss_end_mb']:.0f} MB at the end")
    return "\n".join(lines)
