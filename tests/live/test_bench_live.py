"""``emoray bench`` live figures in a short run: every number is measured and consistent; speed itself is never asserted."""

from __future__ import annotations

from pipeline.bench.live import format_live_report, run_live_bench
from tests.live.conftest import require_rtsp_server


def test_live_bench_measures_latency_against_the_bare_model_time(tmp_path):
    require_rtsp_server()
    result = run_live_bench(resolutions=((640, 360),), seconds=4.0, long_seconds=8.0, workdir=tmp_path)
    (row,) = result["rows"]
    assert row["resolution"] == "640x360" and 7 <= row["seconds"] <= 12
    assert row["processed"] > 0 and row["received"] >= row["processed"] + row["dropped"]
    assert row["faces"] > 0  # the astronaut's face is in every frame of the camera clip
    assert 0 < row["bare_models_ms"] and 0 < row["p50_ms"] <= row["p95_ms"] <= row["max_ms"]
    assert row["p95_vs_bare"] == row["p95_ms"] / row["bare_models_ms"]
    growth = result["growth"]
    assert growth["p95_first_half_ms"] > 0 and growth["p95_second_half_ms"] > 0 and growth["rss_end_mb"] > 100
    assert "p95/bare" in format_live_report(result)
