"""``emoray bench`` in quick mode measures every stage on real clips; speed itself is never asserted."""

from __future__ import annotations

import json

from pipeline.bench.batch import FPS, format_report, run_bench


def test_quick_bench_measures_every_stage_and_reports_it(local_ray, tmp_path):
    result = run_bench(quick=True, workdir=tmp_path)

    json.dumps(result)  # the CLI prints it as JSON
    (row,) = result["rows"]
    assert row["resolution"] == "640x360"
    for key in ("decode_fps", "detector_fps", "end_to_end_fps", "end_to_end_total_fps", "end_to_end_vs_detector",
                "peak_rss_mb"):
        assert row[key] > 0, key
    assert row["frames"] == 2 * FPS
    assert row["faces_per_frame"] >= 0.9  # the astronaut's face is in (nearly) every frame
    assert all(rate > 0 for rate in result["classifier_faces_per_s"].values())
    short, long = result["memory"]["clips"]
    assert (short["frames"], long["frames"]) == (2 * FPS, 3 * 2 * FPS)  # every frame went through
    assert short["peak_rss_mb"] > 0 and long["peak_rss_mb"] > 0
    assert 0 <= result["machine"]["other_cpu_share"] <= 1
    assert result["annotate"]["frames"] == 2 * FPS

    report = format_report(result)
    assert "640x360" in report and "batch 64" in report and "ms/frame" in report
