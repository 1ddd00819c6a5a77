"""``emoray bench``: each stage alone, then the real batch pipeline end to end, with its peak memory.

Stages are timed alone (decode, detector, classifier) on the same real clips the pipeline then runs
on, so the gap between the detector alone and the whole pipeline shows what orchestration costs.
End-to-end start-up (actor creation, weight loading) is separated from steady-state throughput by
also running a short clip: the difference between the two runs is per-frame cost, the rest is
start-up. Peak memory is compared on a clip ``long_factor`` times longer: in a streaming pipeline it
should not grow with video length.
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
import ray
import torch

from jobs.manifest import COMPLETE
from jobs.spec import JobSpec, RunOptions
from models import EmotionClassifier, FaceDetector, registry
from models.errors import EmorayError
from pipeline.batch import BatchJob
from pipeline.cluster import connect
from pipeline.samples import make_clip
from pipeline.sources.file import iter_frames, probe
from pipeline.stages import detector_input_size

RESOLUTIONS: tuple[tuple[int, int], ...] = ((640, 360), (1280, 720), (1920, 1080))
FOCUS = (1280, 720)  # annotation cost and the long-clip memory comparison run at this resolution
FPS = 24
CLASSIFIER_BATCHES = (1, 64)
MIN_TIMED_SECONDS = 1.0  # each classifier rate is timed over at least this long
RSS_INTERVAL_S = 0.1


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


class PeakRss:
    """Peak summed RSS of this process and its Ray processes, sampled in a thread while a run goes.

    With an embedded Ray, raylet and every worker descend from this process. On an external cluster
    the workers on this machine do not, so processes named ``ray::`` of this user are added (those
    of any other Ray session of the user too). Shared pages (the object store) count once per
    process that touches them, so the sum is an upper bound.
    """

    def __init__(self, *, other_ray_processes: bool) -> None:
        import psutil  # shipped inside Ray (ray/thirdparty_files), importable once ray is imported

        self._psutil, self._me = psutil, psutil.Process()
        self._other_ray_processes = other_ray_processes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)
        self.baseline = self.peak = 0

    def __enter__(self) -> "PeakRss":
        self.baseline = self.peak = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> int:
        """Summed RSS in bytes, now."""
        processes = {p.pid: p for p in [self._me, *self._me.children(recursive=True)]}
        if self._other_ray_processes:
            user = self._me.username()
            for p in self._psutil.process_iter(["cmdline", "username"]):
                if p.info["username"] == user and p.info["cmdline"] and p.info["cmdline"][0].startswith("ray::"):
                    processes.setdefault(p.pid, p)
        total = 0
        for process in processes.values():
            try:
                total += process.memory_info().rss
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                pass
        return total

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(RSS_INTERVAL_S):
            self.peak = max(self.peak, self.sample())


def _run_job(clip: Path, out: Path, options: RunOptions, *, external: bool) -> dict:
    """One real ``BatchJob`` over one clip: frames, seconds of ``run()``, peak and baseline RSS."""
    job = BatchJob(JobSpec(inputs=(str(clip),), output=str(out), options=options, force=True))
    with PeakRss(other_ray_processes=external) as rss:
        started = time.perf_counter()
        outcomes = job.run()
        seconds = time.perf_counter() - started
    failed = [o for o in outcomes if o.status != COMPLETE]
    if failed:
        raise BenchError(f"{clip}: the end-to-end run failed: {failed[0].error}")
    frames = sum(o.frames for o in outcomes)
    return {"frames": frames, "seconds": round(seconds, 3), "fps": frames / seconds,
            "peak_rss_mb": rss.peak / 2**20, "baseline_rss_mb": rss.baseline / 2**20,
            "plan": dataclasses.asdict(job.plan)}


def _steady(short: dict, full: dict) -> tuple[float | None, float | None]:
    """Steady-state fps and start-up seconds from a short and a full run (two points on a line)."""
    extra_seconds = full["seconds"] - short["seconds"]
    if extra_seconds <= 0:
        return None, None
    fps = (full["frames"] - short["frames"]) / extra_seconds
    return fps, short["seconds"] - short["frames"] / fps


def _classifier_rates(classifier: EmotionClassifier, crops: np.ndarray) -> dict[str, float]:
    """Faces/s at each batch size of ``CLASSIFIER_BATCHES``, the real crops repeated to fill a batch."""
    batches = {n: np.resize(crops, (n, *crops.shape[1:])) for n in CLASSIFIER_BATCHES}
    return {str(n): _rate(lambda: classifier(batch), n) for n, batch in batches.items()}


def run_bench(*, resolutions: Sequence[tuple[int, int]] = RESOLUTIONS, seconds: float = 10.0, long_factor: int = 10,
              det_size: int | None = 640, batch_size: int = 8, device: str = "cpu", address: str | None = None,
              workdir: str | os.PathLike | None = None, quick: bool = False) -> dict:
    """Measure decode, detector, classifier and end-to-end throughput and peak memory; a JSON-ready dict.

    ``quick`` shrinks everything (one resolution, 2 s clips, long factor 3) for a smoke test.
    """
    if quick:
        resolutions, seconds, long_factor = list(resolutions)[:1], 2.0, 3
    resolutions = [tuple(size) for size in resolutions]
    if not resolutions:
        raise ValueError("resolutions must name at least one (width, height), but got none")
    if seconds <= 0 or long_factor < 1 or batch_size < 1:
        raise ValueError(f"seconds must be > 0, long_factor and batch_size >= 1, but got "
                         f"seconds={seconds}, long_factor={long_factor}, batch_size={batch_size}")
    load_before = os.getloadavg()[0]  # before this bench adds its own load
    workdir = Path(workdir) if workdir else registry.home() / "bench"
    focus = FOCUS if FOCUS in resolutions else resolutions[-1]
    short_seconds = min(1.0, seconds / 4)
    clips = {size: _clip(workdir, size, seconds) for size in resolutions}
    short_clips = {size: _clip(workdir, size, short_seconds) for size in resolutions}
    long_clip = _clip(workdir, focus, seconds * long_factor)

    result: dict = {"settings": {"resolutions": [_name(s) for s in resolutions], "seconds": seconds,
                                 "short_seconds": short_seconds, "long_factor": long_factor, "fps": FPS,
                                 "det_size": det_size, "batch_size": batch_size, "device": device,
                                 "address": address, "workdir": str(workdir)}}
    detector = FaceDetector(device=device, det_size=None, num_threads=os.cpu_count())
    classifier = EmotionClassifier(device=device)
    result["machine"] = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                         "torch": torch.__version__, "ray": ray.__version__, "av": av.__version__,
                         "python": platform.python_version(), "load_avg_1m_before": load_before}
    rows, crops = [], []
    for size in resolutions:
        det_wh = detector_input_size(probe(clips[size]), det_size)
        frames, decode_fps = _decode(clips[size], det_wh)
        detections, detector_fps = _detect(detector, frames, batch_size)
        if not crops:
            crops = [crop for frame, found in zip(frames, detections) for crop in classifier.crop(frame, found.xyxy)]
        rows.append({"resolution": _name(size), "detector_input": _name(det_wh), "frames": len(frames),
                     "faces_per_frame": sum(map(len, detections)) / len(frames),
                     "decode_fps": decode_fps, "detector_fps": detector_fps})
        del frames
    if not crops:
        raise BenchError(f"{clips[resolutions[0]]}: the detector found no face to crop for the classifier")
    result["classifier_faces_per_s"] = _classifier_rates(classifier, np.stack(crops))

    started = time.perf_counter()
    connect(address)
    result["ray_connect_s"] = time.perf_counter() - started
    options = RunOptions(annotate=False, det_size=det_size, batch_size=batch_size, device=device)
    external = address is not None
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="out-") as scratch:
        runs = (Path(scratch) / f"run-{i}" for i in itertools.count())
        # the first job in this process also starts Ray's worker pool: reported as the cold start
        result["cold_run"] = _run_job(short_clips[resolutions[0]], next(runs), options, external=external)
        full_runs = {}
        for row, size in zip(rows, resolutions):
            short = _run_job(short_clips[size], next(runs), options, external=external)
            full = full_runs[size] = _run_job(clips[size], next(runs), options, external=external)
            steady_fps, startup_s = _steady(short, full)
            row.update({"end_to_end_fps": steady_fps, "end_to_end_total_fps": full["fps"], "startup_s": startup_s,
                        "end_to_end_vs_detector": steady_fps / row["detector_fps"] if steady_fps else None,
                        "peak_rss_mb": full["peak_rss_mb"]})
        annotated = _run_job(clips[focus], next(runs), dataclasses.replace(options, annotate=True), external=external)
        plain = full_runs[focus]
        result["annotate"] = {"resolution": _name(focus), "seconds_without": plain["seconds"],
                              "seconds_with": annotated["seconds"], "frames": annotated["frames"],
                              "encoder_ms_per_frame": 1000 * (annotated["seconds"] - plain["seconds"]) / annotated["frames"],
                              "peak_rss_mb": annotated["peak_rss_mb"]}
        long = _run_job(long_clip, next(runs), options, external=external)
    result["memory"] = {"resolution": _name(focus), "short_seconds": seconds, "long_seconds": seconds * long_factor,
                        "short_frames": plain["frames"], "long_frames": long["frames"],
                        "short_peak_rss_mb": plain["peak_rss_mb"], "long_peak_rss_mb": long["peak_rss_mb"],
                        "ratio": long["peak_rss_mb"] / plain["peak_rss_mb"], "long_fps": long["fps"],
                        "baseline_rss_mb": plain["baseline_rss_mb"],
                        "rss_scope": "this process + Ray processes" + (" of this user" if external else " it started")}
    result["cluster_plan"] = plain["plan"]
    result["rows"] = rows
    return result


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(str(cell).rjust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def format_report(result: dict) -> str:
    """Plain-text tables of a ``run_bench`` result."""
    m, s, a, mem, plan = result["machine"], result["settings"], result["annotate"], result["memory"], result["cluster_plan"]
    stage_rows = [[r["resolution"], r["detector_input"], _num(r["decode_fps"]), _num(r["detector_fps"]),
                   _num(r["end_to_end_fps"]), _num(r["end_to_end_total_fps"]), _num(r["startup_s"], 2),
                   _num(r["end_to_end_vs_detector"], 2), _num(r["peak_rss_mb"], 0)] for r in result["rows"]]
    classifier = result["classifier_faces_per_s"]
    busy = m["load_avg_1m_before"] > 0.5 * m["cpu_count"]
    return "\n".join([
        *(["WARNING: the machine was busy before the bench (1-minute load average above half the CPUs): "
           "other work competes for the CPUs and the numbers come out low"] if busy else []),
        f"emoray bench: {m['cpu_count']} CPUs, torch {m['torch']} ({m['torch_threads']} threads), Ray {m['ray']}, "
        f"PyAV {m['av']}, device {s['device']}",
        f"clips: {s['seconds']:g} s at {s['fps']} fps (start-up probe {s['short_seconds']:g} s, long clip "
        f"x{s['long_factor']}), detector input longer side {s['det_size']}, batch {s['batch_size']}; "
        f"1-minute load average before: {m['load_avg_1m_before']:.2f}",
        "",
        "Throughput, frames/s. e2e = BatchJob.run() on one clip, annotation off: 'steady' excludes start-up",
        "(actors, weights), found from a short and a full run; 'total' includes it. ratio = steady / detector.",
        _table(["resolution", "det input", "decode", "detector", "e2e steady", "e2e total", "start-up s",
                "ratio", "peak RSS MB"], stage_rows),
        "",
        "Emotion classifier, faces/s: " + ", ".join(f"batch {n}: {_num(v, 0)}" for n, v in classifier.items()),
        f"Annotation at {a['resolution']}: {a['seconds_without']:.2f} s without, {a['seconds_with']:.2f} s with "
        f"for {a['frames']} frames = {_num(a['encoder_ms_per_frame'], 2)} ms/frame for drawing + H.264 encoding",
        "",
        f"Peak memory at {mem['resolution']} ({mem['rss_scope']}, summed RSS; {mem['baseline_rss_mb']:.0f} MB before the run):",
        _table(["clip", "frames", "peak RSS MB"],
               [[f"{mem['short_seconds']:g} s", str(mem['short_frames']), _num(mem['short_peak_rss_mb'], 0)],
                [f"{mem['long_seconds']:g} s", str(mem['long_frames']), _num(mem['long_peak_rss_mb'], 0)]]),
        f"long/short peak ratio {mem['ratio']:.2f} (the long clip ran at {mem['long_fps']:.1f} frames/s total)",
        "",
        f"Ray connect {result['ray_connect_s']:.2f} s; first job in the process (cold worker pool) "
        f"{result['cold_run']['seconds']:.2f} s for {result['cold_run']['frames']} frames",
        f"cluster plan: {plan['detectors']} detector actor(s) {plan['detector_resources']} with "
        f"{plan['detector_threads']} threads, classifier {plan['classifier_resources']}, decode tasks "
        f"{plan['segment_cpus']} CPU, up to {plan['max_segments_in_flight']} segments in flight",
    ])
