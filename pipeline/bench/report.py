"""Plain-text tables of ``emoray bench`` results."""

from __future__ import annotations

from typing import Sequence

BUSY_SHARE = 0.1  # other processes using more of the machine's CPU time than this make the numbers low


def text_table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(str(cell).rjust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def format_number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def format_report(result: dict) -> str:
    """Plain-text tables of a ``pipeline.bench.batch.run_bench`` result."""
    m, s, a, mem, plan = result["machine"], result["settings"], result["annotate"], result["memory"], result["cluster_plan"]
    crowd, small, short = result["crowd"], result["small_clips"], result["short_job"]
    other, n = m["other_cpu_share"], format_number
    stage_rows = [[r["resolution"], r["detector_input"], n(r["decode_fps"]), n(r["detector_fps"]), n(r["stage_sum_fps"]),
                   n(r["end_to_end_fps"]), n(r["end_to_end_total_fps"]), n(r["end_to_end_vs_stage_sum"], 2),
                   n(r["startup_s"], 2), n(r["faces_per_frame"], 3), n(r["peak_rss_mb"], 0), n(r["peak_pss_mb"], 0)]
                  for r in result["rows"]]
    memory_rows = [[f"{c['seconds']:g} s", str(c["frames"]), str(c["segments"]), n(c["peak_rss_mb"], 0),
                    n(c["peak_pss_mb"], 0), n(c["process_wall_s"], 1)] for c in mem["clips"]]
    classifiers = ", ".join(f"{name} {n(ms, 2)} ms" for name, ms in result["classifier_ms_per_face"].items())
    return "\n".join([
        *([f"WARNING: other processes used {other:.0%} of this machine's CPU time during the bench: "
           "the numbers come out low"] if other is not None and other > BUSY_SHARE else []),
        f"emoray bench: {m['cpu_count']} CPUs, backend {s['backend']}, torch {m['torch']} ({m['torch_threads']} threads), "
        f"Ray {m['ray']}, PyAV {m['av']}, device {s['device']}; {result['bench_seconds']:.0f} s, other processes' "
        "CPU share " + ("unknown (external cluster)" if other is None else f"{other:.0%}"),
        f"clips: {s['seconds']:g} s at {s['fps']} fps (start-up probe {s['short_seconds']:g} s, long clip "
        f"x{s['long_factor']}), detector input longer side {s['det_size']}, batch {s['batch_size']}",
        "",
        "Throughput, frames/s (e2e runs in this process, whose memory the peak columns include). stage sum = decode, detector and classifier timed alone, one after the other;",
        "e2e = BatchJob.run() on one clip, annotation off: 'steady' excludes start-up (actors, weights), found",
        "from a short and a full run; 'total' includes it. ratio = steady / stage sum.",
        text_table(["resolution", "det input", "decode", "detector", "stage sum", "e2e steady", "e2e total", "ratio",
                    "start-up s", "faces/frame", "peak RSS MB", "peak PSS MB"], stage_rows),
        "",
        "Driver (the scheduling process): CPU per frame beyond its start-up, and the job ceiling that implies; "
        "bytes of face results handed to the per-video units per frame:",
        text_table(["resolution", "driver CPU s", "driver ms/frame", "ceiling frames/s", "bytes/frame to units"],
                   [[r["resolution"], n(r["driver_cpu_s"], 3), n(r["driver_ms_per_frame"], 4),
                     n(1000 / r["driver_ms_per_frame"], 0) if r["driver_ms_per_frame"] > 0 else "-",
                     n(r["unit_bytes_per_frame"], 0)] for r in result["rows"]]),
        "",
        "Emotion classifier, faces/s: " + ", ".join(
            f"batch {size}: {n(v, 0)}" for size, v in result["classifier_faces_per_s"].items())
        + f"; per face at batch 64: {classifiers}",
        f"Crowd ({crowd['resolution']}, {n(crowd['faces_per_frame'], 1)} faces/frame): {n(crowd['faces_per_s'], 0)} faces/s "
        f"end to end, steady ({n(crowd['fps'])} frames/s) = {n(crowd['vs_classifier'], 2)} of the classifier's own "
        f"{n(crowd['classifier_faces_per_s'], 0)} faces/s",
        f"Many small files: {small['clips']} clips of {small['seconds_each']:g} s ({small['resolution']}) in "
        f"{n(small['seconds'])} s = {n(small['fps'])} frames/s; each file costs {n(small['per_clip_overhead_s'], 3)} s "
        "beyond its frames and the job's start-up",
        f"Short job (a fresh `emoray run` of {short['frames']} frames, annotated): {n(short['process_wall_s'], 2)} s "
        f"process wall, first result after {n(short['first_result_s'], 2)} s",
        f"Persons (--persons video, the default) at {result['persons']['resolution']}: "
        f"{n(result['persons']['fps_with'])} frames/s steady, {n(result['persons']['fps_without'])} with --persons off "
        f"(ratio {n(result['persons']['ratio'], 2)})",
        f"Annotation at {a['resolution']}: {a['seconds_without']:.2f} s without, {a['seconds_with']:.2f} s with "
        f"for {a['frames']} frames = {n(a['encoder_ms_per_frame'], 2)} ms/frame for drawing + H.264 encoding",
        "",
        f"Peak memory of `emoray run --no-annotate` in a fresh process at {mem['resolution']}, summed over its "
        "process tree (the driver and its embedded Ray; RSS counts shared pages once per process, PSS splits them):",
        text_table(["clip", "frames", "segments", "peak RSS MB", "peak PSS MB", "process s"], memory_rows),
        f"long/short peak ratio: RSS {mem['ratio']:.2f}, PSS {mem['pss_ratio']:.2f}",
        "",
        f"Ray connect {result['ray_connect_s']:.2f} s; first job in the process (cold worker pool) "
        f"{result['cold_run']['seconds']:.2f} s for {result['cold_run']['frames']} frames",
        f"cluster plan: {plan['actors']} model actor(s) {plan['actor_resources']} with {plan['actor_threads']} "
        f"threads, decode tasks {plan['segment_cpus']} CPU, up to {plan['max_segments_in_flight']} segments in flight, "
        f"{plan['unit_hosts']} unit host(s)",
    ])
