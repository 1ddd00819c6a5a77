"""``emoray bench`` live figures in a short run: every number is measured and consistent; speed itself is never asserted."""

from __future__ import annotations

from pipeline.bench.live import format_live_report, run_live_bench
from pipeline.bench.streams import format_streams_report, run_streams_bench
from tests.live.conftest import require_rtsp_server


def test_live_bench_measures_latency_against_the_bare_model_time(tmp_path):
    require_rtsp_server()
    result = run_live_bench(resolutions=((640, 360),), seconds=4.0, long_seconds=8.0, workdir=tmp_path)
    (row,) = result["rows"]
    assert row["resolution"] == "640x360" and 7 <= row["seconds"] <= 12
    assert row["processed"] > 0 and row["received"] >= row["processed"] + row["dropped"]
    assert row["faces"] > 0  # the astronaut's face is in every frame of the camera clip
    assert 0 < row["bare_models_ms"] and 0 < row["p50_ms"] <= row["p95_ms"] <= row["max_ms"]
    # the camera was really followed: about its frame rate received over the run (joining waits for a keyframe)
    assert 0.5 * result["fps"] * row["seconds"] <= row["received"] <= 1.1 * result["fps"] * row["seconds"] + 5
    growth = result["growth"]
    assert growth["p95_first_half_ms"] > 0 and growth["p95_second_half_ms"] > 0 and growth["rss_end_mb"] > 100
    assert "p95/bare" in format_live_report(result)


def test_streams_bench_follows_each_camera_and_sees_the_one_it_took_down_come_back(tmp_path):
    require_rtsp_server()
    result = run_streams_bench(streams=2, seconds=9.0, outage_seconds=2.0, workdir=tmp_path)
    down, up = result["rows"]
    assert [down["source"], up["source"]] == ["camera-0", "camera-1"] and result["outage"]["source"] == "camera-0"
    assert down["reconnects"] >= 1 and up["reconnects"] == 0  # only the camera taken down was lost
    assert down["rate_in_outage"] < up["rate_in_outage"]  # camera 0 sent nothing for 2 of its 9 s
    for row in result["rows"]:
        assert 0 < row["processed"] <= row["received"] and 0 < row["processed_share"] <= 1
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["max_ms"]
    assert result["one"]["processed"] > 0 and result["peak_rss_mb"] > 100 and result["peak_rss_vs_one"] > 0
    assert "camera-1" in format_streams_report(result)
