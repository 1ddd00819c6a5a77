"""``emoray bench``: each stage alone, then the real batch pipeline end to end, with its peak memory.

Stages are timed alone (decode, detector, classifier) on the same real clips the pipeline then runs
on, so the gap between the detector alone and the whole pipeline shows what orchestration costs.
End-to-end start-up (actor creation, weight loading) is separated from steady-state throughput by
also running a short clip: the extra time of the full clip is per-frame cost, the rest is start-up.
Peak memory is compared on a clip ``long_factor`` times longer: a streaming pipeline's should not
grow with video length.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import av
import numpy as np
import psutil
import ray
import torch

from jobs.manifest import COMPLETE
from pipeline.sources.plan import plan_segments
from jobs.spec import JobSpec, RunOptions
from models import EmotionClassifier, FaceDetector, registry
from models.errors import EmorayError
from pipeline.batch import BatchJob
from jobs.cluster import connect
from pipeline.samples import make_clip
from pipeline.sources.file import iter_frames, probe
from pipeline.faces import detector_input_size

RESOLUTIONS: tuple[tuple[int, int], ...] = ((640, 360), (1280, 720), (1920, 1080))
FOCUS = (1280, 720)  # annotation cost and the long-clip memory comparison run at this resolution
FPS = 24
CLASSIFIER_BATCHES = (1, 64)
MIN_TIMED_SECONDS = 1.0  # each classifier rate is timed over at least this long
RSS_INTERVAL_S = 0.1
BUSY_SHARE = 0.1  # other processes using more of the machine's CPU time than this make the numbers low


class BenchError(EmorayError, RuntimeError):
    """A benchmark step could not measure what it should (a run failed, no face was found)."""


def _name(size_wh: tuple[int, int]) -> str:
    return f"{size_wh[0]}x{size_wh[1]}"


def _clip(workdir: Path, size_wh: tuple[int, int], seconds: float) -> Path:
    """The cached sample clip of this size and length, made once."""
    path = workdir / f"astronaut-{_name(size_wh)}-{seconds:g}s-{FPS}fps.mp4"
    if not path.exists():
        make_clip(path, width=size_wh[0], height=size_wh[1], seconds=seconds, fps=FPS)
    return path


def _decode(path: Path, size_wh: tuple[int, int]) -> tuple[list[np.ndarray], float]:
    """Every frame converted as ``process_segment`` does (RGB at the detector input size), and the decode fps."""
    info = probe(path)
    started = time.perf_counter()
    frames = [frame.to_rgb(info.rotation, size_wh) for frame in iter_frames(path)]
    return frames, len(frames) / (time.perf_counter() - started)


def _detect(detector: FaceDetector, frames: list[np.ndarray], batch_size: int) -> tuple[list, float]:
    """Detections per frame and detector fps: only the detector calls are timed, after a warm-up call."""
    batches = [np.stack(frames[i:i + batch_size]) for i in range(0, len(frames), batch_size)]
    detector(batches[0])
    started = time.perf_counter()
    detections = [found for batch in batches for found in detector(batch)]
    return detections, len(frames) / (time.perf_counter() - started)


def _rate(call: Callable[[], object], items_per_call: int) -> float:
    """Items per second of ``call``, after a warm-up call, timed over at least ``MIN_TIMED_SECONDS``."""
    call()
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < MIN_TIMED_SECONDS or calls < 3:
        call()
        calls += 1
    return calls * items_per_call / elapsed


def _measure_stages(clips: dict, *, det_size: int | None, batch_size: int, device: str,
                    backend: str) -> tuple[list[dict], dict]:
    """Per-resolution decode and detector fps, and classifier faces/s on the faces found in the first clip."""
    detector = FaceDetector(device=device, det_size=None, num_threads=os.cpu_count(), backend=backend)
    classifier = EmotionClassifier(device=device, backend=backend)
    rows, crops = [], []
    for size, clip in clips.items():
        det_wh = detector_input_size(probe(clip), det_size)
        frames, decode_fps = _decode(clip, det_wh)
        detections, detector_fps = _detect(detector, frames, batch_size)
        if not crops:
            crops = [crop for frame, found in zip(frames, detections) for crop in classifier.crop(frame, found.xyxy)]
        rows.append({"resolution": _name(size), "detector_input": _name(det_wh), "frames": len(frames),
                     "faces_per_frame": sum(map(len, detections)) / len(frames),
                     "decode_fps": decode_fps, "detector_fps": detector_fps})
    if not crops:
        raise BenchError(f"{next(iter(clips.values()))}: the detector found no face to crop for the classifier")
    stacked = np.stack(crops)
    batches = {n: np.resize(stacked, (n, *stacked.shape[1:])) for n in CLASSIFIER_BATCHES}  # real crops, repeated
    return rows, {str(n): _rate(lambda batch=batch: classifier(batch), n) for n, batch in batches.items()}


class Monitor:
    """Samples our processes in a thread for the whole bench: peak summed RSS and the CPU time they used.

    Ours are this process and its descendants, which an embedded Ray's raylet and workers all are; with
    an external cluster, this user's ``ray::`` processes (of any Ray session). Shared pages count once
    per process: the RSS sum is an upper bound. CPU time is kept per process as last seen, because Ray
    does not fold exited workers into its children's times; what the machine spent beyond ours is the
    share other work took, which makes every number low.
    """

    def __init__(self, *, external: bool) -> None:
        self._psutil, self._me, self._external = psutil, psutil.Process(), external
        self._started, self._busy_before = time.time(), self._machine_busy()
        self._cpu: dict[tuple[int, float], list[float]] = {}  # (pid, create time) -> [first, last] seconds
        self._lock, self._stop = threading.RLock(), threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)
        self.baseline = self.peak = 0.0

    def __enter__(self) -> "Monitor":
        self.reset()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def reset(self) -> None:
        """Start a new peak from the RSS now."""
        with self._lock:
            self.peak = 0.0
            self.baseline = self.sample()

    def sample(self) -> float:
        """Summed RSS in bytes now; records CPU times on the way."""
        with self._lock:  # a sample from before reset() must not raise the new peak
            processes = {p.pid: p for p in [self._me, *self._me.children(recursive=True)]}
            if self._external:
                for p in self._psutil.process_iter(["cmdline", "username"]):
                    if p.info["username"] == self._me.username() and (p.info["cmdline"] or [""])[0].startswith("ray::"):
                        processes.setdefault(p.pid, p)
            rss = 0.0
            for process in processes.values():
                try:
                    with process.oneshot():
                        rss += process.memory_info().rss
                        cpu, created = sum(process.cpu_times()[:2]), process.create_time()
                except self._psutil.Error:
                    continue
                self._cpu.setdefault((process.pid, created), [0.0 if created > self._started else cpu, cpu])[1] = cpu
            self.peak = max(self.peak, rss)
            return rss

    def other_cpu_share(self, wall_seconds: float) -> float:
        """Share of the machine's CPU time (0..1) that processes other than ours used since the start."""
        ours = sum(last - first for first, last in self._cpu.values())
        return max(0.0, self._machine_busy() - self._busy_before - ours) / (wall_seconds * os.cpu_count())

    def _machine_busy(self) -> float:
        times = self._psutil.cpu_times()
        return times.user + times.nice + times.system + times.irq + times.softirq

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(RSS_INTERVAL_S):
            self.sample()


def _run_job(clip: Path, out: Path, options: RunOptions, monitor: Monitor) -> dict:
    """One real ``BatchJob`` over one clip: frames, seconds of ``run()``, peak and baseline RSS."""
    job = BatchJob(JobSpec(inputs=(str(clip),), output=str(out), options=options, force=True))
    monitor.reset()
    started = time.perf_counter()
    outcomes = job.run()
    seconds = time.perf_counter() - started
    failed = [o for o in outcomes if o.status != COMPLETE]
    if failed:
        raise BenchError(f"{clip}: the end-to-end run failed: {failed[0].error}")
    frames, info = sum(o.frames for o in outcomes), probe(clip)
    return {"frames": frames, "seconds": seconds, "fps": frames / seconds, "peak_rss_mb": monitor.peak / 2**20,
            "baseline_rss_mb": monitor.baseline / 2**20, "plan": dataclasses.asdict(job.plan), "duration": info.duration,
            "segments": len(plan_segments(clip, info, segment_seconds=options.segment_seconds))}


def _measure_end_to_end(rows: list[dict], clips: dict, short_clips: dict, long_clip: Path, focus: tuple[int, int],
                        options: RunOptions, scratch: Path, monitor: Monitor) -> dict:
    """Fill ``rows`` with end-to-end figures; the cold start, annotation cost and long-clip memory."""
    runs = (scratch / f"run-{i}" for i in itertools.count())

    def run(clip: Path, run_options: RunOptions = options) -> dict:
        return _run_job(clip, next(runs), run_options, monitor)

    cold = run(next(iter(short_clips.values())))  # the first job in a process also warms Ray's worker pool
    full_runs = {}
    for row, size in zip(rows, clips):
        short, full = run(short_clips[size]), run(clips[size])
        full_runs[size] = full
        extra_seconds = full["seconds"] - short["seconds"]  # two points on a line: per-frame cost and start-up
        steady = (full["frames"] - short["frames"]) / extra_seconds if extra_seconds > 0 else None
        row.update({"end_to_end_fps": steady, "end_to_end_total_fps": full["fps"],
                    "startup_s": short["seconds"] - short["frames"] / steady if steady else None,
                    "end_to_end_vs_detector": steady / row["detector_fps"] if steady else None,
                    "peak_rss_mb": full["peak_rss_mb"]})
    plain, annotated = full_runs[focus], run(clips[focus], dataclasses.replace(options, annotate=True))
    long = run(long_clip)
    return {
        "cold_run": {"seconds": cold["seconds"], "frames": cold["frames"]},
        "cluster_plan": plain["plan"],
        "annotate": {"resolution": _name(focus), "seconds_without": plain["seconds"],
                     "seconds_with": annotated["seconds"], "frames": annotated["frames"],
                     "encoder_ms_per_frame": 1000 * (annotated["seconds"] - plain["seconds"]) / annotated["frames"]},
        "memory": {"resolution": _name(focus), "baseline_rss_mb": plain["baseline_rss_mb"],
                   "clips": [{"seconds": r["duration"], "frames": r["frames"], "segments": r["segments"],
                              "peak_rss_mb": r["peak_rss_mb"], "fps": r["fps"]} for r in (plain, long)],
                   "ratio": long["peak_rss_mb"] / plain["peak_rss_mb"]},
    }


def run_bench(*, resolutions: Sequence[tuple[int, int]] = RESOLUTIONS, seconds: float = 10.0, long_factor: int = 10,
              det_size: int | None = 640, batch_size: int = 8, device: str = "cpu", backend: str = "auto",
              address: str | None = None,
              workdir: str | os.PathLike | None = None, quick: bool = False) -> dict:
    """Measure decode, detector, classifier and end-to-end throughput and peak memory; a JSON-ready dict.

    ``quick`` shrinks everything (one resolution, 2 s clips, long factor 3) for a smoke test.
    """
    if quick:
        resolutions, seconds, long_factor = list(resolutions)[:1], 2.0, 3
    resolutions = [tuple(size) for size in resolutions]
    if not resolutions or seconds <= 0 or long_factor < 1 or batch_size < 1:
        raise ValueError(f"expected resolutions, seconds > 0, long_factor >= 1 and batch_size >= 1, but got "
                         f"{resolutions=}, {seconds=}, {long_factor=}, {batch_size=}")
    external = address is not None
    workdir = Path(workdir) if workdir else registry.home() / "bench"
    focus = FOCUS if FOCUS in resolutions else resolutions[-1]
    short_seconds = min(1.0, seconds / 4)
    with Monitor(external=external) as monitor:
        started = time.perf_counter()
        clips = {size: _clip(workdir, size, seconds) for size in resolutions}
        short_clips = {size: _clip(workdir, size, short_seconds) for size in resolutions}
        long_clip = _clip(workdir, focus, seconds * long_factor)
        rows, classifier_rates = _measure_stages(clips, det_size=det_size, batch_size=batch_size, device=device,
                                                 backend=backend)
        connect_started = time.perf_counter()
        connect(address)
        connect_s = time.perf_counter() - connect_started
        options = RunOptions(annotate=False, det_size=det_size, batch_size=batch_size, device=device, backend=backend)
        with tempfile.TemporaryDirectory(dir=workdir, prefix="out-") as scratch:
            end_to_end = _measure_end_to_end(rows, clips, short_clips, long_clip, focus, options, Path(scratch), monitor)
        wall = time.perf_counter() - started
        other_share = None if external else monitor.other_cpu_share(wall)  # ours would include other sessions
    return {
        "settings": {"resolutions": [_name(s) for s in resolutions], "seconds": seconds, "short_seconds": short_seconds,
                     "long_factor": long_factor, "fps": FPS, "det_size": det_size, "batch_size": batch_size,
                     "device": device, "address": address, "workdir": str(workdir)},
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "ray": ray.__version__, "av": av.__version__, "python": platform.python_version(),
                    "other_cpu_share": other_share},
        "rows": rows, "classifier_faces_per_s": classifier_rates, "ray_connect_s": connect_s,
        "bench_seconds": wall, **end_to_end,
    }


def text_table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(str(cell).rjust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def format_number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def format_report(result: dict) -> str:
    """Plain-text tables of a ``run_bench`` result."""
    m, s, a, mem, plan = result["machine"], result["settings"], result["annotate"], result["memory"], result["cluster_plan"]
    other = m["other_cpu_share"]
    stage_rows = [[r["resolution"], r["detector_input"], format_number(r["decode_fps"]), format_number(r["detector_fps"]),
                   format_number(r["end_to_end_fps"]), format_number(r["end_to_end_total_fps"]), format_number(r["startup_s"], 2),
                   format_number(r["end_to_end_vs_detector"], 2), format_number(r["peak_rss_mb"], 0)] for r in result["rows"]]
    memory_rows = [[f"{c['seconds']:g} s", str(c["frames"]), str(c["segments"]), format_number(c["peak_rss_mb"], 0), format_number(c["fps"])]
                   for c in mem["clips"]]
    return "\n".join([
        *([f"WARNING: other processes used {other:.0%} of this machine's CPU time during the bench: "
           "the numbers come out low"] if other is not None and other > BUSY_SHARE else []),
        f"emoray bench: {m['cpu_count']} CPUs, torch {m['torch']} ({m['torch_threads']} threads), Ray {m['ray']}, "
        f"PyAV {m['av']}, device {s['device']}; {result['bench_seconds']:.0f} s, other processes' CPU share "
        + ("unknown (external cluster)" if other is None else f"{other:.0%}"),
        f"clips: {s['seconds']:g} s at {s['fps']} fps (start-up probe {s['short_seconds']:g} s, long clip "
        f"x{s['long_factor']}), detector input longer side {s['det_size']}, batch {s['batch_size']}",
        "",
        "Throughput, frames/s. e2e = BatchJob.run() on one clip, annotation off: 'steady' excludes start-up",
        "(actors, weights), found from a short and a full run; 'total' includes it. ratio = steady / detector.",
        text_table(["resolution", "det input", "decode", "detector", "e2e steady", "e2e total", "start-up s",
                "ratio", "peak RSS MB"], stage_rows),
        "",
        "Emotion classifier, faces/s: " + ", ".join(
            f"batch {n}: {format_number(v, 0)}" for n, v in result["classifier_faces_per_s"].items()),
        f"Annotation at {a['resolution']}: {a['seconds_without']:.2f} s without, {a['seconds_with']:.2f} s with "
        f"for {a['frames']} frames = {format_number(a['encoder_ms_per_frame'], 2)} ms/frame for drawing + H.264 encoding",
        "",
        f"Peak memory at {mem['resolution']}, summed RSS of this process and its Ray processes "
        f"({mem['baseline_rss_mb']:.0f} MB before a run; shared pages count once per process):",
        text_table(["clip", "frames", "segments", "peak RSS MB", "total fps"], memory_rows),
        f"long/short peak ratio {mem['ratio']:.2f}",
        "",
        f"Ray connect {result['ray_connect_s']:.2f} s; first job in the process (cold worker pool) "
        f"{result['cold_run']['seconds']:.2f} s for {result['cold_run']['frames']} frames",
        f"cluster plan: {plan['detectors']} detector actor(s) {plan['detector_resources']} with "
        f"{plan['detector_threads']} threads, classifier {plan['classifier_resources']}, decode tasks "
        f"{plan['segment_cpus']} CPU, up to {plan['max_segments_in_flight']} segments in flight",
    ])
