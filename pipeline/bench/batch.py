"""``emoray bench``: each stage alone, then the real batch pipeline end to end, with its peak memory.

Stages are timed alone (decode, detector, classifier) on the same real clips the pipeline then runs
on; their sum per frame predicts what the pipeline could do if it cost nothing to orchestrate, so
end to end over the stage sum shows what orchestration costs. End-to-end start-up (actor creation,
weight loading) is separated from steady-state throughput by also running a short clip: the extra
time of the full clip is per-frame cost, the rest is start-up. Peak memory (summed RSS and PSS) is
compared on a clip ``long_factor`` times longer: a streaming pipeline's should not grow with video
length. A crowd clip (24 faces a frame) puts the cost on the classifier; a folder of one-second clips
shows the cost of each file beyond its frames; a short job in a fresh process shows what a user
waits for a small clip, start to finish.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import av
import cv2
import numpy as np
import psutil
import ray
import torch

from jobs.cluster import connect
from jobs.manifest import COMPLETE
from jobs.spec import JobSpec, RunOptions
from models import EmotionClassifier, FaceDetector, registry
from models.backend import choose
from models.errors import EmorayError
from pipeline.batch import BatchJob
from pipeline.bench.monitor import Monitor
from pipeline.faces import detector_input_size
from pipeline.cluster_models import object_store_bytes
from pipeline.samples import make_clip, make_crowd_clip
from pipeline.sources.file import iter_frames, probe
from pipeline.sources.plan import plan_segments

RESOLUTIONS: tuple[tuple[int, int], ...] = ((640, 360), (1280, 720), (1920, 1080))
FOCUS = (1280, 720)  # annotation cost and the long-clip memory comparison run at this resolution
FPS = 24
CLASSIFIER_BATCHES = (1, 64)
COMPARED_CLASSIFIERS = ("emoray-ensemble-fer2013", "emoray-small-fer2013", "mini-xception")  # per-face cost beside the default's (batch 64, as the pipeline calls it)
MIN_TIMED_SECONDS = 1.0  # each classifier rate is timed over at least this long
SMALL_CLIPS, SMALL_CLIP_SECONDS = 200, 1.0  # the many-small-files job
SHORT_JOB_FRAMES = 56  # the short job in a fresh process, as long as two_faces.mp4
CROWD_SIZE = (1280, 720)


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
                    backend: str) -> tuple[list[dict], dict, dict]:
    """Per-resolution decode and detector fps; the classifier's faces/s (batch 1 and 64) on the faces found
    in the first clip, and the per-face milliseconds of it and of ``COMPARED_CLASSIFIERS`` at batch 64."""
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
    rates = {str(n): _rate(lambda batch=batch: classifier(batch), n) for n, batch in batches.items()}
    ms_per_face = {registry.DEFAULT_EMOTION_MODEL: 1000 / rates[str(CLASSIFIER_BATCHES[-1])]}
    for name in COMPARED_CLASSIFIERS:
        other = EmotionClassifier(name, device=device, backend=backend)
        side = other.preprocess.input_size
        batch = np.stack([cv2.resize(crop, (side, side)) for crop in batches[CLASSIFIER_BATCHES[-1]]])
        ms_per_face[name] = 1000 / _rate(lambda: other(batch), len(batch))
    return rows, rates, ms_per_face


def _run_job(inputs: Path, out: Path, options: RunOptions, monitor: Monitor) -> dict:
    """One real ``BatchJob`` over a clip or a folder: frames, seconds of ``run()`` and to its first result,
    peak and baseline memory."""
    first_result: list[float] = []
    started = 0.0  # set when run() starts; the closure reads it then

    def on_progress(state: dict) -> None:
        if state["frames"] and not first_result:
            first_result.append(time.perf_counter() - started)

    job = BatchJob(JobSpec(inputs=(str(inputs),), output=str(out), options=options, force=True), on_progress=on_progress)
    monitor.reset()
    started, monitor_cpu = time.perf_counter(), monitor.own_cpu_s
    outcomes = job.run()
    seconds, monitor_cpu = time.perf_counter() - started, monitor.own_cpu_s - monitor_cpu
    failed = [o for o in outcomes if o.status != COMPLETE]
    if failed:
        raise BenchError(f"{failed[0].path}: the end-to-end run failed: {failed[0].error}")
    frames, faces = sum(o.frames for o in outcomes), sum(o.faces for o in outcomes)
    summary = job.summary["summary"]
    result = {"frames": frames, "faces": faces, "videos": len(outcomes), "seconds": seconds, "fps": frames / seconds,
              # the job's driver CPU, less the monitor's sampling thread that runs in the same process
              "driver_cpu_s": summary["driver_cpu_s"] - monitor_cpu, "bytes_to_units": summary["bytes_to_units"],
              "first_result_s": first_result[0] if first_result else None,
              "peak_rss_mb": monitor.peak / 2**20, "peak_pss_mb": monitor.peak_pss / 2**20,
              "baseline_rss_mb": monitor.baseline / 2**20, "baseline_pss_mb": monitor.baseline_pss / 2**20,
              "plan": dataclasses.asdict(job.plan)}
    if inputs.is_file():
        info = probe(inputs)
        result |= {"duration": info.duration,
                   "segments": len(plan_segments(inputs, info, segment_seconds=options.segment_seconds))}
    return result


def _steady_fps(short: dict, full: dict) -> float | None:
    """Frames/s beyond start-up, from two runs (two points on a line); None when the longer run was not
    slower (a machine busy enough to hide the difference: no figure rather than a wrong one)."""
    extra_seconds = full["seconds"] - short["seconds"]
    return (full["frames"] - short["frames"]) / extra_seconds if extra_seconds > 0 else None


def _stage_sum_fps(row: dict, classifier_faces_per_s: float) -> float:
    """Frames/s if decode, detection and classification ran one after the other at their own speeds."""
    return 1.0 / (1.0 / row["decode_fps"] + 1.0 / row["detector_fps"] + row["faces_per_frame"] / classifier_faces_per_s)


def _measure_end_to_end(rows: list[dict], clips: dict, short_clips: dict, focus: tuple[int, int],
                        options: RunOptions, classifier_faces_per_s: float, run: Callable[..., dict]) -> dict:
    """Fill ``rows`` with end-to-end figures (runs in this process); the cold start and the annotation cost."""
    cold = run(next(iter(short_clips.values())))  # the first job in a process also starts Ray's workers
    full_runs = {}
    for row, size in zip(rows, clips):
        short, full = run(short_clips[size]), run(clips[size])
        full_runs[size] = full
        steady = _steady_fps(short, full)
        stage_sum = _stage_sum_fps(row, classifier_faces_per_s)
        extra_frames = full["frames"] - short["frames"]
        row.update({"end_to_end_fps": steady, "end_to_end_total_fps": full["fps"],
                    # what the driver spends per frame beyond its start-up: the job's ceiling is 1 / this
                    "driver_ms_per_frame": 1000 * (full["driver_cpu_s"] - short["driver_cpu_s"]) / extra_frames,
                    "driver_cpu_s": full["driver_cpu_s"], "unit_bytes_per_frame": full["bytes_to_units"] / full["frames"],
                    "startup_s": short["seconds"] - short["frames"] / steady if steady else None,
                    "first_result_s": short["first_result_s"],
                    "end_to_end_vs_detector": steady / row["detector_fps"] if steady else None,
                    "stage_sum_fps": stage_sum, "end_to_end_vs_stage_sum": steady / stage_sum if steady else None,
                    "peak_rss_mb": full["peak_rss_mb"], "peak_pss_mb": full["peak_pss_mb"]})
    plain, annotated = full_runs[focus], run(clips[focus], dataclasses.replace(options, annotate=True))
    first = next(iter(clips))  # what following persons costs: the first resolution again, tracks only
    tracks_only = dataclasses.replace(options, persons="off")
    short, full = run(short_clips[first], tracks_only), run(clips[first], tracks_only)
    without = _steady_fps(short, full)
    return {
        "persons": {"resolution": _name(first), "fps_with": rows[0]["end_to_end_fps"], "fps_without": without,
                    "ratio": rows[0]["end_to_end_fps"] / without if rows[0]["end_to_end_fps"] and without else None},
        "cold_run": {"seconds": cold["seconds"], "frames": cold["frames"], "first_result_s": cold["first_result_s"]},
        "cluster_plan": plain["plan"],
        "annotate": {"resolution": _name(focus), "seconds_without": plain["seconds"],
                     "seconds_with": annotated["seconds"], "frames": annotated["frames"],
                     "encoder_ms_per_frame": 1000 * (annotated["seconds"] - plain["seconds"]) / annotated["frames"]},
    }


def _measure_memory(clips: list[Path], workdir: Path, address: str | None, options: RunOptions) -> dict:
    """Peak memory of ``emoray run`` in a fresh process on a clip and on a longer one: it should not grow."""
    runs = [_fresh_run(clip, workdir, address, options) for clip in clips]
    for clip, run in zip(clips, runs):
        info = probe(clip)
        run |= {"seconds": info.duration, "fps": run["frames"] / run["process_wall_s"],
                "segments": len(plan_segments(clip, info, segment_seconds=options.segment_seconds))}
    first = probe(clips[0])
    return {"resolution": _name((first.width, first.height)), "clips": runs,
            "ratio": runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"],
            "pss_ratio": runs[-1]["peak_pss_mb"] / runs[0]["peak_pss_mb"]}


def _crowd_clip(workdir: Path, seconds: float) -> Path:
    clip = workdir / f"crowd-{_name(CROWD_SIZE)}-{seconds:g}s-{FPS}fps.mp4"
    if not clip.exists():
        make_crowd_clip(clip, width=CROWD_SIZE[0], height=CROWD_SIZE[1], seconds=seconds, fps=FPS)
    return clip


def _measure_crowd(workdir: Path, seconds: float, classifier_faces_per_s: float, run: Callable[..., dict]) -> dict:
    """Steady faces/s end to end on the crowd clip (a short and a full run, as for the rows), beside the
    classifier's own rate at batch 64."""
    short, full = run(_crowd_clip(workdir, min(1.0, seconds / 4))), run(_crowd_clip(workdir, seconds))
    extra_seconds = full["seconds"] - short["seconds"]
    faces_per_s = (full["faces"] - short["faces"]) / extra_seconds if extra_seconds > 0 else None
    return {"resolution": _name(CROWD_SIZE), "frames": full["frames"], "faces_per_frame": full["faces"] / full["frames"],
            "fps": (full["frames"] - short["frames"]) / extra_seconds if extra_seconds > 0 else None,
            "faces_per_s": faces_per_s, "classifier_faces_per_s": classifier_faces_per_s,
            "vs_classifier": faces_per_s / classifier_faces_per_s if faces_per_s else None,
            "peak_pss_mb": full["peak_pss_mb"]}


def _measure_small_clips(workdir: Path, size: tuple[int, int], count: int, row: dict, run: Callable[..., dict]) -> dict:
    """One job over a folder of ``count`` one-second clips: what each file costs beyond its frames and the
    job's start-up (both from ``row``, the same resolution's steady figures)."""
    folder = workdir / f"small-{count}x{SMALL_CLIP_SECONDS:g}s-{_name(size)}"
    first = _clip(workdir, size, SMALL_CLIP_SECONDS)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):  # the same content would be processed once: each copy gets one different byte
        copy = folder / f"clip-{index:04d}.mp4"
        if not copy.exists():
            copy.write_bytes(first.read_bytes() + index.to_bytes(4, "big"))
    result = run(folder)
    overhead = None
    if row["end_to_end_fps"] and row["startup_s"] is not None:
        overhead = (result["seconds"] - row["startup_s"] - result["frames"] / row["end_to_end_fps"]) / result["videos"]
    return {"clips": result["videos"], "seconds_each": SMALL_CLIP_SECONDS, "resolution": _name(size),
            "frames": result["frames"], "seconds": result["seconds"], "fps": result["fps"],
            "per_clip_overhead_s": overhead, "peak_pss_mb": result["peak_pss_mb"]}


def _fresh_run(clip: Path, workdir: Path, address: str | None, options: RunOptions) -> dict:
    """``emoray run`` of ``clip`` in a fresh process: its wall time, when its first result came (from the
    process's start), and the peak memory summed over its process tree."""
    settings = {name: getattr(options, name) for name in ("backend", "device", "annotate", "det_size", "batch_size")}
    with tempfile.TemporaryDirectory(dir=workdir, prefix="fresh-") as out:
        command = [sys.executable, "-m", "pipeline.bench.fresh_run", str(clip), out, json.dumps(settings)]
        environment = os.environ | ({"RAY_ADDRESS": address} if address else {})
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
        with Monitor(external=address is not None, root=psutil.Process(process.pid)) as monitor:
            stdout, stderr = process.communicate()
        wall = time.perf_counter() - started
    if process.returncode != 0:
        raise BenchError(f"{clip}: emoray run in a fresh process failed: {stderr.strip().splitlines()[-1:]}")
    return {"process_wall_s": wall, "peak_rss_mb": monitor.peak / 2**20, "peak_pss_mb": monitor.peak_pss / 2**20,
            **json.loads(stdout.strip().splitlines()[-1])}


def run_bench(*, resolutions: Sequence[tuple[int, int]] = RESOLUTIONS, seconds: float = 10.0, long_factor: int = 10,
              det_size: int | None = RunOptions.det_size, batch_size: int = RunOptions.batch_size,
              device: str = "cpu", backend: str = "auto",
              address: str | None = None, workdir: str | os.PathLike | None = None, quick: bool = False) -> dict:
    """Measure decode, detector, classifier and end-to-end throughput and peak memory; a JSON-ready dict.

    ``quick`` shrinks everything (one resolution, 2 s clips, long factor 3, 5 small clips) for a smoke test.
    """
    small_clips = SMALL_CLIPS
    if quick:
        resolutions, seconds, long_factor, small_clips = list(resolutions)[:1], 2.0, 3, 5
    resolutions = [tuple(size) for size in resolutions]
    if not resolutions or seconds <= 0 or long_factor < 1 or batch_size < 1:
        raise ValueError(f"expected resolutions, seconds > 0, long_factor >= 1 and batch_size >= 1, but got "
                         f"{resolutions=}, {seconds=}, {long_factor=}, {batch_size=}")
    external = address is not None
    workdir = Path(workdir) if workdir else registry.home() / "bench"
    focus = FOCUS if FOCUS in resolutions else resolutions[-1]
    short_seconds = min(1.0, seconds / 4)
    options = RunOptions(annotate=False, det_size=det_size, batch_size=batch_size, device=device, backend=backend)
    with Monitor(external=external) as monitor:
        started = time.perf_counter()
        clips = {size: _clip(workdir, size, seconds) for size in resolutions}
        short_clips = {size: _clip(workdir, size, short_seconds) for size in resolutions}
        long_clip = _clip(workdir, focus, seconds * long_factor)
        rows, classifier_rates, classifier_ms = _measure_stages(clips, det_size=det_size, batch_size=batch_size,
                                                                device=device, backend=backend)
        # fresh processes first, while this one has started no Ray: their process trees are theirs alone
        short_job = _fresh_run(_clip(workdir, resolutions[0], SHORT_JOB_FRAMES / FPS), workdir, address,
                               dataclasses.replace(options, annotate=True)) | {"frames": SHORT_JOB_FRAMES}
        memory = _measure_memory([clips[focus], long_clip], workdir, address, options)
        connect_started = time.perf_counter()
        connect(address, object_store_bytes=object_store_bytes(options, os.cpu_count() or 1))
        connect_s = time.perf_counter() - connect_started
        classifier_rate = classifier_rates[str(CLASSIFIER_BATCHES[-1])]
        with tempfile.TemporaryDirectory(dir=workdir, prefix="out-") as scratch:
            runs = (Path(scratch) / f"run-{i}" for i in itertools.count())

            def run(inputs: Path, run_options: RunOptions = options) -> dict:
                return _run_job(inputs, next(runs), run_options, monitor)

            end_to_end = _measure_end_to_end(rows, clips, short_clips, focus, options, classifier_rate, run)
            crowd = _measure_crowd(workdir, seconds / 2, classifier_rate, run)
            small = _measure_small_clips(workdir, resolutions[0], small_clips, rows[0], run)
        wall = time.perf_counter() - started
        other_share = None if external else monitor.other_cpu_share(wall)  # ours would include other sessions
    return {
        "settings": {"resolutions": [_name(s) for s in resolutions], "seconds": seconds, "short_seconds": short_seconds,
                     "long_factor": long_factor, "fps": FPS, "det_size": det_size, "batch_size": batch_size,
                     "device": device,
                     "backend": choose(device, backend)[1], "address": address, "workdir": str(workdir)},
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "ray": ray.__version__, "av": av.__version__, "python": platform.python_version(),
                    "other_cpu_share": other_share},
        "rows": rows, "classifier_faces_per_s": classifier_rates, "classifier_ms_per_face": classifier_ms,
        "ray_connect_s": connect_s, "short_job": short_job, "memory": memory, "crowd": crowd, "small_clips": small,
        "bench_seconds": wall, **end_to_end,
    }
