"""``emoray bench`` in quick mode measures every stage on real clips; speed itself is never asserted."""

from __future__ import annotations

import json

from pipeline.bench.batch import COMPARED_CLASSIFIERS, FPS, run_bench
from pipeline.bench.report import format_report


def test_quick_bench_measures_every_stage_and_reports_it(local_ray, tmp_path):
    result = run_bench(quick=True, workdir=tmp_path)

    json.dumps(result)  # the CLI prints it as JSON
    (row,) = result["rows"]
    assert row["resolution"] == "640x360"
    for key in ("decode_fps", "detector_fps", "end_to_end_fps", "end_to_end_total_fps", "end_to_end_vs_detector",
                "stage_sum_fps", "end_to_end_vs_stage_sum", "first_result_s", "peak_rss_mb", "peak_pss_mb"):
        assert row[key] > 0, key
    assert row["peak_pss_mb"] <= row["peak_rss_mb"]  # shared pages split, not counted once per process
    assert row["stage_sum_fps"] < min(row["decode_fps"], row["detector_fps"])
    assert result["settings"]["backend"] == "onnx"  # auto, on a CPU
    assert row["frames"] == 2 * FPS
    assert row["faces_per_frame"] >= 0.9  # the astronaut's face is in (nearly) every frame
    # a face's results and, every half second, its 150x150 chip for the persons: not the frame's 691,200 bytes
    assert row["driver_cpu_s"] > 0 and 100 < row["unit_bytes_per_frame"] < 20_000
    assert all(rate > 0 for rate in result["classifier_faces_per_s"].values())
    assert set(result["classifier_ms_per_face"]) == {"emoray-vgg48-fer2013", *COMPARED_CLASSIFIERS}
    crowd, small, short_job = result["crowd"], result["small_clips"], result["short_job"]
    assert crowd["faces_per_frame"] >= 20 and crowd["faces_per_s"] > 0  # 24 astronauts a frame
    assert small["clips"] == 5 and small["frames"] == 5 * FPS  # each copy processed, none skipped as a duplicate
    assert short_job["frames"] == 56 and short_job["process_wall_s"] > short_job["first_result_s"] > 0
    short, long = result["memory"]["clips"]  # emoray run in a fresh process: its own driver and Ray
    assert (short["frames"], long["frames"]) == (2 * FPS, 3 * 2 * FPS)  # every frame went through
    assert short["peak_pss_mb"] > 0 and long["peak_pss_mb"] > 0
    assert 0 <= result["machine"]["other_cpu_share"] <= 1
    assert result["annotate"]["frames"] == 2 * FPS

    report = format_report(result)
    assert "640x360" in report and "batch 64" in report and "ms/frame" in report and "peak PSS MB" in report
    assert "Crowd" in report and "Many small files" in report and "Short job" in report
    assert "driver ms/frame" in report and "unit host" in report and "--persons off" in report
    assert result["persons"]["fps_with"] > 0 and result["persons"]["fps_without"] > 0
