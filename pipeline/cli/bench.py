"""``emoray bench``: batch throughput and memory, live latency."""

from __future__ import annotations

import json

import click

from jobs.spec import ModelOptions
from models import registry
from pipeline.cli.options import DetectorSize, FiniteFloatRange, address_option, exits_on_error


def _resolutions(value: str) -> list[tuple[int, int]]:
    try:
        return [tuple(int(n) for n in item.lower().split("x")) for item in value.split(",")]
    except ValueError as error:
        raise click.BadParameter(f"expected WIDTHxHEIGHT[,WIDTHxHEIGHT...], but got {value!r}") from error


@click.command()
@click.option("--resolutions", default="640x360,1280x720,1920x1080", show_default=True, callback=lambda c, p, v: _resolutions(v),
              help="Clip sizes to measure.")
@click.option("--seconds", type=FiniteFloatRange(min=0, min_open=True), default=10.0, show_default=True, help="Clip length.")
@click.option("--long-factor", type=click.IntRange(min=1), default=10, show_default=True,
              help="The memory check also runs a clip this many times longer.")
@click.option("--det-size", type=DetectorSize(), default=ModelOptions.det_size, show_default=True, help="Longer side of the detector input, or 'native'.")
@click.option("--batch-size", type=click.IntRange(min=1), default=ModelOptions.batch_size, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--backend", type=click.Choice(["auto", "torch", "onnx"]), default="auto", show_default=True,
              help="Inference engine (auto: onnxruntime on CPUs, torch on GPUs).")
@click.option("--quick", is_flag=True, help="A smoke run: one resolution, 2 s clips, long factor 3.")
@click.option("--only", type=click.Choice(["batch", "live"]), default=None, help="Run one part (default: both).")
@click.option("--live-seconds", type=FiniteFloatRange(min=1), default=60.0, show_default=True,
              help="Length of the live run at 640x360 that checks latency and memory do not grow (with --streams: of each run).")
@click.option("--streams", type=click.IntRange(min=1), default=None,
              help="Live: follow this many local RTSP cameras (640x360, 10 fps) at once, beside one alone; one is "
                   "down for 6 s a third of the way in.")
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as JSON.")
@address_option
@exits_on_error
def bench(resolutions, seconds, long_factor, det_size, batch_size, device, backend, quick, only, live_seconds, streams,
          as_json, address):
    """Measure batch throughput and peak memory, and live-mode latency against a local RTSP server.

    Batch: clips are made from the demo content; each stage is timed alone, then the real pipeline
    runs end to end (annotation off, then on), and peak memory is compared on a 10x longer clip.
    Live (needs GStreamer's RTSP server, `make system-deps`): capture-to-result latency p50/p95 at
    640x360 and 1280x720 against the bare model time of one frame, and growth over --live-seconds; with
    --streams N, N cameras through one session beside one camera alone (each stream's share of frames
    processed, latency, reconnects, peak memory).

    \b
    Examples:
      emoray bench
      emoray bench --quick --only batch
      emoray bench --only live --live-seconds 120
      emoray bench --only live --streams 4 --live-seconds 45
      emoray bench --resolutions 1280x720 --seconds 20 --json > bench.json
    """
    from pipeline.bench.batch import run_bench
    from pipeline.bench.report import format_report
    from pipeline.bench.live import format_live_report, run_live_bench
    from pipeline.bench.streams import format_streams_report, run_streams_bench

    result: dict = {}
    if only != "live":
        result = run_bench(resolutions=resolutions, seconds=seconds, long_factor=long_factor, det_size=det_size,
                           batch_size=batch_size, device=device, backend=backend, address=address, quick=quick)
    if only != "batch" and streams:
        result["streams"] = run_streams_bench(streams=streams, seconds=10.0 if quick else live_seconds,
                                              workdir=registry.home() / "bench", device=device, backend=backend)
    elif only != "batch":
        result["live"] = run_live_bench(seconds=5.0 if quick else 20.0, long_seconds=10.0 if quick else live_seconds,
                                        workdir=registry.home() / "bench", device=device, backend=backend)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    reports = [format_report(result)] if only != "live" else []
    reports += [format_live_report(result["live"])] if "live" in result else []
    reports += [format_streams_report(result["streams"])] if "streams" in result else []
    click.echo("\n\n".join(reports))
