"""The ``emoray`` command line. Commands only parse options and call library functions."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path

import click

from jobs.spec import RANGES, ROLL_SECONDS, JobSpec, LiveSourceOptions, ModelOptions, RunOptions
from models import registry
from models.emotion import ARCHITECTURE_NAMES
from models.errors import EmorayError
from pipeline.cli_options import (
    EXIT_FAILED, EXIT_OK, DetectorSize, FiniteFloatRange, address_option, build_options, dashboard_option, exits_on_error,
    model_options, range_type,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose: bool) -> None:
    """emoray: find faces in video and recognize their emotions, on Ray.

    Exit codes: 0 when everything succeeded, 1 when any work failed, 2 for bad arguments.
    Weights are cached under $EMORAY_HOME (default ~/.cache/emoray).
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="emoray: %(message)s")


@main.group()
def models() -> None:
    """List and fetch model weights.

    \b
    Examples:
      emoray models list
      emoray models fetch                 # every named model
      emoray models fetch mini-xception
    """


def _human_size(size: int | None) -> str:
    return "-" if size is None else f"{size / 1e6:.1f} MB"


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models_list(as_json: bool) -> None:
    """Show the named models: role, source, pinned sha256, and whether they are cached."""
    rows = registry.list_entries()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = ("NAME", "ROLE", "SOURCE", "SHA256", "CACHED", "SIZE")
    table = [header] + [
        (r["name"], r["role"], r["source"], r["sha256"][:16] + "…", "yes" if r["cached"] else "no", _human_size(r["size_bytes"]))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    click.echo(f"\ncache: {registry.home() / 'models'}")


@models.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Download and convert again even when cached.")
def models_fetch(names: tuple[str, ...], force: bool) -> None:
    """Download, verify (sha256) and convert weights into the cache; all named models by default."""
    unknown = [name for name in names if name not in registry.ENTRIES]
    if unknown:
        raise click.BadParameter(
            f"unknown model {', '.join(unknown)}; known: {', '.join(registry.ENTRIES)}", param_hint="NAMES"
        )
    failed = False
    for name in names or tuple(registry.ENTRIES):
        try:
            path = registry.fetch(registry.ENTRIES[name], force=force)
        except EmorayError as error:
            click.echo(f"{name}: FAILED: {error}", err=True)
            failed = True
            continue
        click.echo(f"{name}: {path} ({_human_size(path.stat().st_size)})")
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Output directory (OUT).")
@click.option("--glob", "glob_pattern", default=None, help="Only inputs whose relative path or name matches, e.g. '*.mp4'.")
@click.option("--fps", type=range_type(RANGES["fps"]), default=None, help="Sample about this many frames per second (default: every frame).")
@model_options
@click.option("--no-annotate", is_flag=True, help="Skip the annotated videos.")
@click.option("--force", is_flag=True, help="Redo videos that are already complete.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--report", "with_report", is_flag=True, help="Also write OUT/report.html (see emoray report).")
@address_option
@dashboard_option
@exits_on_error
def run(paths, output, glob_pattern, fps, model_options, no_annotate, force, as_json, with_report, address, dashboard):
    """Find faces and their emotions in videos and images; write Parquet, annotated videos and manifests.

    PATHS are files or directories (searched recursively for videos and images; OUT and other emoray
    output folders are left out). Videos already complete in OUT with the same models and options are
    skipped; rerun the same command to resume. One run at a time writes OUT. SIGTERM or Ctrl-C keep
    finished videos, publish nothing of unfinished ones and exit 143 or 130.

    \b
    Examples:
      emoray run recordings/ -o results/
      emoray run a.mp4 b.mov -o results/ --fps 5 --no-annotate
      emoray run /data/study --glob '*.mp4' -o /data/out --address auto
    Then: emoray query results/ "SELECT emotion, count(*) FROM faces GROUP BY 1"
    """
    import ray
    from rich.console import Console

    from jobs.cluster import silence_worker_output
    from jobs.lock import output_lock
    from pipeline.batch import BatchJob, check_output_writable, connect_for
    from pipeline.progress import JobProgress, failed_outcomes, stop_line, summary_json, summary_table
    from pipeline.stopping import stop_on_signals

    options = build_options(RunOptions, **model_options, fps=fps, annotate=not no_annotate)
    spec = JobSpec(inputs=tuple(paths), output=output, options=options, glob=glob_pattern, force=force)
    check_output_writable(output)
    with output_lock(output), stop_on_signals() as signals:
        connect_for(options, address, dashboard=dashboard)
        signals.install()  # ray.init put its own SIGTERM handler in place of ours
        signals.request.call_when_set(silence_worker_output)  # a stopped run ends with one line
        job = BatchJob(spec, stop=signals.request)
        if placement := job.placement():
            click.echo(f"emoray: {placement}", err=True)
        with JobProgress(Console(stderr=True)) as progress:
            job.on_progress = progress.update
            outcomes = job.run()
        ray.shutdown()  # now, not at exit, where Ray first waits half a second for late worker messages
    failed = failed_outcomes(outcomes)
    if signals.request.is_set():
        click.echo(stop_line(outcomes, signals.request.signal_name, output), err=True)
        sys.exit(signals.request.exit_code)
    if as_json:
        click.echo(json.dumps(summary_json(outcomes, output), indent=2))
    else:
        Console().print(summary_table(outcomes))
        click.echo(f"outputs in {output}; try: emoray query {output} \"SELECT emotion, count(*) AS n FROM faces GROUP BY 1 ORDER BY n DESC\"")
    if with_report:
        _write_report(output)
    if failed:
        click.echo(f"{len(failed)} of {len(outcomes)} inputs failed", err=True)
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


def _write_report(output: str) -> None:
    """``run --report``: the page, or a warning; the run's own outcome stands either way."""
    from pipeline.html_report import write_report

    try:
        click.echo(f"report: {write_report(output)}", err=True)
    except EmorayError as error:
        click.echo(f"emoray: no report: {error}", err=True)


def _host_port(value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"expected [HOST:]PORT, e.g. 8080 or 0.0.0.0:8080, but got {value!r}", param_hint="--serve")
    return host or "127.0.0.1", int(port)


@main.command()
@click.argument("sources", nargs=-1, metavar="SOURCE...")
@click.option("--sources", "sources_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A file of sources, one per line: URL or path, then optionally a name ('#' starts a comment).")
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None, help="Write Parquet parts under OUT.")
@click.option("--jsonl", is_flag=True, help="Print one JSON object per processed frame on stdout (with its source).")
@click.option("--serve", default=None, metavar="[HOST:]PORT", help="Serve a live preview page of every source (host default 127.0.0.1).")
@click.option("--roll-seconds", type=range_type(RANGES["roll_seconds"]), default=ROLL_SECONDS, show_default=True, help="Start a new Parquet part this often.")
@click.option("--duration", type=range_type(RANGES["duration"]), default=None, help="Stop after this many seconds (default: run until Ctrl-C).")
@click.option("--realtime", is_flag=True, help="Play a file at its frame rate as if it were a camera (default: every frame, as fast as the models go).")
@click.option("--rtsp-transport", type=click.Choice(["tcp", "udp"]), default=LiveSourceOptions.rtsp_transport, show_default=True)
@click.option("--timeout", "socket_timeout", type=range_type(RANGES["timeout"]), default=LiveSourceOptions.timeout, show_default=True, help="Seconds to wait for a source to connect or send.")
@click.option("--max-retries", type=click.IntRange(min=0), default=LiveSourceOptions.max_retries, show_default=True, help="Failed reconnects in a row before giving up on a source (backoff "
              f"{LiveSourceOptions.backoff_initial:g} s doubling to {LiveSourceOptions.backoff_max:g} s).")
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print the final summary as JSON on stdout.")
@click.option("--address", envvar="RAY_ADDRESS", default=None,
              help="Run the models as actors on this Ray cluster (default: in this process). Env: RAY_ADDRESS.")
@exits_on_error
def live(sources, sources_file, output, jsonl, serve, roll_seconds, duration, realtime, rtsp_transport, socket_timeout,
         max_retries, model_options, as_json, address):
    """Follow live sources (RTSP cameras, any stream PyAV opens, or files): newest frame first.

    Many sources share one set of models: the newest frame of every source goes through one detector batch
    and one classifier batch, then through that source's own tracker, persons and outputs. Frames the
    models cannot keep up with are dropped and counted, never queued, so results stay current. A stream
    that drops is reconnected; one that fails for good is reported while the others go on. A file is
    replayed frame by frame, every frame in order (the same rows as `emoray run`), or at its frame rate
    like a camera with --realtime. Ctrl-C, SIGTERM or --duration stop it: what is buffered is written, and
    a summary per source (frames received, processed, dropped, reconnects, latency p50/p95/max) is printed;
    the exit code is 1 when any source failed.

    \b
    Examples:
      emoray live rtsp://camera.local:554/stream -o live-out/
      emoray live rtsp://cam1/stream rtsp://cam2/stream --serve 8080   # both in one grid
      emoray live --sources cameras.txt -o live-out/ --jsonl | jq -c '[.source, .faces[].emotion]'
      emoray live rtsp://127.0.0.1:8554/stream --jsonl --duration 60 | jq .faces
      emoray live clip.mp4 --realtime --serve 8080
      emoray live session.mp4 -o replay/                # every frame of a recorded session
    """
    from pipeline.live import open_session, read_sources, session_summary
    from pipeline.stopping import stop_on_signals

    given = [(source, None) for source in sources] + (read_sources(Path(sources_file)) if sources_file else [])
    if not given:
        raise click.UsageError("no source: give SOURCE... or --sources FILE")
    serve_address = _host_port(serve)
    if output is None and not jsonl and serve_address is None:
        raise click.UsageError("nothing to write: give -o OUT, --jsonl or --serve")
    options = build_options(ModelOptions, **model_options)
    reader_options = LiveSourceOptions(rtsp_transport=rtsp_transport, timeout=socket_timeout,
                                       max_retries=max_retries, realtime=realtime)
    with contextlib.ExitStack() as held:  # the output lock, until the session is over
        if output is not None:
            from jobs.lock import output_lock
            from pipeline.batch import check_output_writable

            check_output_writable(Path(output))
            held.enter_context(output_lock(output))
        if address:
            from jobs.cluster import connect

            connect(address)
        try:
            session, server = open_session(given, Path(output) if output else None, options, reader_options=reader_options,
                                           jsonl=jsonl, serve=serve_address, roll_seconds=roll_seconds, use_ray=bool(address))
        except OSError as error:  # e.g. the --serve port is taken
            click.echo(f"emoray: cannot start live mode: {error}", err=True)
            sys.exit(EXIT_FAILED)
        if server is not None:
            held.callback(server.close)
            click.echo(f"preview: {server.url}", err=True)
        held.callback(session.models.close)
        with stop_on_signals() as signals:  # the first SIGINT or SIGTERM ends the session cleanly
            session.start()
            stats = session.run(signals.request, duration)
    summary = session_summary(stats)
    if as_json:
        click.echo(json.dumps(summary))
        for source in stats:  # the failures are told on stderr too, where a pipe's reader does not look
            if source.error:
                click.echo(f"emoray: {source.error}", err=True)
    else:
        click.echo("\n".join(source.format() for source in stats), err=True)
    sys.exit(EXIT_FAILED if any(source.error for source in stats) else EXIT_OK)


@main.command()
@click.argument("output", metavar="OUT")
@click.argument("sql")
@click.option("--format", "output_format", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("-o", "--out-file", type=click.Path(dir_okay=False), default=None, help="Write the result to this file.")
@exits_on_error
def query(output, sql, output_format, out_file):
    """Run SQL (DuckDB) over a job's outputs: views ``faces``, ``frames``, ``tracks``, ``episodes`` and
    ``videos`` (the manifests). OUT is a folder or an object-store URI (s3://bucket/out).

    Rows of a video appear once it is complete; ``videos`` also lists failed videos with the reason.

    \b
    Examples:
      emoray query results/ "SELECT emotion, count(*) FROM faces GROUP BY 1 ORDER BY 2 DESC"
      emoray query results/ "SELECT video_id, avg(num_faces) FROM frames GROUP BY 1" --format csv
      emoray query results/ "SELECT * FROM faces WHERE emotion = 'happy'" --format json -o happy.json
      emoray query results/ "SELECT path, error FROM videos WHERE status = 'failed'"
    """
    from pipeline.query import query as run_query

    relation = run_query(output, sql)
    if relation is None:
        return
    if output_format == "table" and out_file is None:
        relation.show(max_rows=40, max_width=200)
        return
    text = _format_table(relation.to_arrow_table(), output_format if output_format != "table" else "csv")
    if out_file:
        Path(out_file).write_text(text)
    else:
        click.echo(text, nl=False)


def _format_table(table, output_format: str) -> str:
    """An Arrow table as CSV or JSON records (JSON lists, numbers and nulls as they are)."""
    if output_format == "json":
        return json.dumps(table.to_pylist(), default=str, indent=1) + "\n"
    import io

    import pyarrow.csv as pacsv

    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer)
    return buffer.getvalue().decode()


@main.command()
@click.argument("output", metavar="OUT")
@click.option("-o", "--out-file", default=None, help="The page to write, a path or a URI (default: OUT/report.html).")
@exits_on_error
def report(output, out_file):
    """Write one self-contained HTML page about a job's results: per video, per person.

    An overview, one line per video, and per video (folded) each track's best face, its smoothed
    emotions over time with the episodes marked, and the longest episodes. No script, nothing loaded
    from the network: it opens anywhere, by mail too.

    \b
    Examples:
      emoray report results/                 # results/report.html
      emoray report results/ -o study.html
      emoray report s3://bucket/results/      # s3://bucket/results/report.html
    """
    from pipeline.html_report import write_report

    click.echo(str(write_report(output, out_file)))


@main.command()
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
              help="Output directory (default: $EMORAY_HOME/demo/out).")
@address_option
@dashboard_option
@exits_on_error
def demo(output, address, dashboard):
    """Make a short clip with a real face and run the whole pipeline on it.

    The clip pans and zooms over scikit-image's astronaut photo (read from its pinned wheel); the
    run writes Parquet, an annotated video and a manifest, then prints a query to try.
    """
    from pipeline.api import run_batch
    from pipeline.samples import make_clip

    workdir = registry.home() / "demo"
    out = Path(output) if output else workdir / "out"
    clip = workdir / "astronaut_640x360.mp4"
    if not clip.exists():
        click.echo(f"making the demo clip {clip}", err=True)
        make_clip(clip, width=640, height=360, seconds=8)
    outcome = run_batch([clip], out, force=True, address=address, dashboard=dashboard)[0]
    if outcome.status != "complete":
        click.echo(f"emoray: the demo failed: {outcome.error}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"processed {outcome.frames} frames of {clip}: {outcome.faces} faces, mostly {outcome.dominant_emotion}")
    click.echo(f"  results   {out}/faces/ and {out}/frames/ (Parquet, hive-partitioned by video_id)")
    click.echo(f"  video     {out}/annotated/{clip.name}")
    click.echo(f"  manifest  {out}/manifest/{outcome.video_id}.json")
    click.echo(f"  people    emoray query {out} \"SELECT * FROM episodes\"; emoray report {out}")
    click.echo(f"try:\n  emoray query {out} \"SELECT emotion, count(*) AS faces, round(avg(emotion_score), 2) AS score "
               f"FROM faces GROUP BY 1 ORDER BY faces DESC\"")


def _resolutions(value: str) -> list[tuple[int, int]]:
    try:
        return [tuple(int(n) for n in item.lower().split("x")) for item in value.split(",")]
    except ValueError as error:
        raise click.BadParameter(f"expected WIDTHxHEIGHT[,WIDTHxHEIGHT...], but got {value!r}") from error


@main.command()
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


@main.command()
@click.option("--data", required=True, type=click.Path(exists=True), help="Kaggle fer2013.csv, a folder of split folders, or one folder of class folders.")
@click.option("--val", "val_path", type=click.Path(exists=True), default=None, help="Validation class folders (default: from --data).")
@click.option("--arch", type=click.Choice(ARCHITECTURE_NAMES),
              default="vgg_face48", show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Checkpoint to write (.pt).")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--lr", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="Peak learning rate (one-cycle: a warm-up over the first 15% of the steps, then down). "
                   "Default 0.05 from scratch, 0.002 with --init.")
@click.option("--patience", type=click.IntRange(min=1), default=8, show_default=True, help="Stop after this many epochs without a better val accuracy.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--num-workers", type=click.IntRange(min=1), default=1, show_default=True, help="Ray Train workers (data parallel).")
@click.option("--use-gpu", is_flag=True, help="One GPU per worker, float16 mixed precision.")
@click.option("--resume", is_flag=True, help="Continue from the last completed epoch of the same output.")
@click.option("--init", "init_from", default=None, help="Start from this emotion model (name or path): fine-tuning.")
@click.option("--freeze", type=FiniteFloatRange(0, 1), default=None,
              help="Share of the layers, from the input on, left as the start learned them. Default 0.5 with "
                   "--init (small data refines the later layers), 0 from scratch.")
@click.option("--force-write", is_flag=True,
              help="With --init: write the best fine-tuned epoch even when it is no better than the start.")
@click.option("--ferplus-weight", type=FiniteFloatRange(0, 1), default=0.0, show_default=True,
              help="FER-2013 data: blend each training image's FER+ vote shares into its target by this weight "
                   "(its label keeps the rest).")
@click.option("--votes", type=click.Path(exists=True, dir_okay=False), default=None,
              help="FER+ fer2013new.csv for --ferplus-weight (default: ferplus/fer2013new.csv beside --data).")
@click.option("--teacher", "teachers", multiple=True,
              help="Distillation: an emotion model (name or path) whose probabilities the new model learns; "
                   "repeat it for an ensemble of teachers, averaged.")
@click.option("--teacher-weight", type=FiniteFloatRange(0, 1), default=0.5, show_default=True,
              help="With --teacher: the share of each image's target taken from the teachers.")
@click.option("--widths", default=None, metavar="W1,W2,...",
              help="Channels of each stage of --arch (vgg_face48: 32,64,128,256; mini_xception: 16,32,64,128): "
                   "narrower is cheaper per face.")
@click.option("-v", "--verbose", is_flag=True, help="Also show Ray Train's own messages.")
@address_option
@exits_on_error
def train(data, val_path, arch, epochs, output, batch_size, lr, patience, seed, num_workers, use_gpu, resume, init_from,
          freeze, force_write, ferplus_weight, votes, teachers, teacher_weight, widths, verbose, address):
    """Train an emotion CNN on FER-2013 or your own labeled faces, on Ray Train.

    Selection uses the validation split only; a single folder of class folders is split 80/10/10
    (stratified, seeded). Mixed precision: float16 on GPU, bfloat16 on CPUs that support it.

    Fine-tuning (--init) is safe by default: the starting model is measured on val first (epoch 0) and
    the best epoch is chosen including it, so the result is never worse on val than the start; when no
    epoch beats it, nothing is written (exit code 1) unless --force-write. Its defaults suit a few hundred
    faces: 1/25 of the from-scratch learning rate with a warm-up, the first half of the layers frozen.
    A learning curve is written beside the output (OUTPUT.curve.png).

    \b
    Examples:
      emoray train --data ../shared/data/fer2013 --epochs 30 -o emoray-fer.pt
      emoray train --data my_faces/ --init emoray-vgg48-fer2013 --epochs 10 -o my-model.pt
      emoray train --data fer2013.csv -o model.pt --resume
    Then: emoray eval --data ../shared/data/fer2013/val --model emoray-fer.pt
    """
    from jobs.cluster import connect
    from models.datasets import ferplus_soft_targets, ferplus_votes_beside, training_splits
    from models.train import FINE_TUNE_FREEZE, FINE_TUNE_LR, TrainConfig, fine_tuning_start
    from models.train import train as run_training

    splits = training_splits(data, val=val_path, seed=seed)
    tuning = init_from is not None
    config = TrainConfig(arch=arch, epochs=epochs, batch_size=batch_size, patience=patience, seed=seed,
                         num_workers=num_workers, use_gpu=use_gpu,
                         lr=lr if lr is not None else FINE_TUNE_LR if tuning else TrainConfig.lr,
                         freeze=freeze if freeze is not None else FINE_TUNE_FREEZE if tuning else 0.0,
                         ferplus_weight=ferplus_weight, teachers=teachers,
                         teacher_weight=teacher_weight if teachers else 0.0, arch_kwargs=_widths(widths))
    if tuning and widths:
        raise click.BadParameter("a fine-tune keeps the widths of the model it starts from", param_hint="--widths")
    if config.ferplus_weight + config.teacher_weight > 1:
        raise click.BadParameter("--ferplus-weight and --teacher-weight add up to more than 1", param_hint="--teacher-weight")
    ferplus_targets = None
    if ferplus_weight > 0:
        votes = votes or ferplus_votes_beside(data)
        if votes is None:
            raise click.BadParameter(f"no ferplus/fer2013new.csv in or beside {data}: give it with --votes",
                                     param_hint="--ferplus-weight")
        ferplus_targets = ferplus_soft_targets(splits["train"], votes)
    init_state = None
    if tuning:
        config, init_state = fine_tuning_start(init_from, config)
    # Ray Train's controller asks Ray's state API (no lean Ray); its workers' lines only with -v
    connect(address, lean=False, log_to_driver=verbose)

    def show(epoch: dict) -> None:
        if epoch["epoch"] == 0:
            click.echo(f"epoch   0/{config.epochs}  the start ({init_from})  val acc {epoch['val_accuracy']:.4f}", err=True)
            return
        click.echo(f"epoch {epoch['epoch']:>3}/{config.epochs}  loss {epoch['loss']:.4f}  "
                   f"train acc {epoch['train_accuracy']:.4f}  val acc {epoch['val_accuracy']:.4f}  "
                   f"best {epoch['best_val_accuracy']:.4f}  {epoch['seconds']:.0f} s", err=True)

    metrics = run_training(splits["train"], splits["val"], config, output, resume=resume, init_state=init_state,
                           ferplus_targets=ferplus_targets, force_write=force_write,
                           command=" ".join(["emoray", *sys.argv[1:]]), on_epoch=show)
    kept = "the start, unchanged" if metrics["best_epoch"] == 0 else f"epoch {metrics['best_epoch']}"
    click.echo(f"wrote {output}: val accuracy {metrics['val_accuracy']:.4f} mirror-averaged, as emoray eval and run "
               f"classify (the table's are one view), calibration error {metrics['val_ece']:.3f} at temperature "
               f"{metrics['temperature']:.2f}; best {kept} of {metrics['epochs_run']}, "
               f"{metrics['train_seconds'] / 60:.1f} min; learning curve {output}.curve.png")


def _widths(text: str | None) -> dict:
    """``--widths 24,48,96,192`` -> the architecture's ``widths`` argument."""
    if text is None:
        return {}
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise click.BadParameter(f"expected positive channel counts separated by commas, got {text!r}", param_hint="--widths")
    return {"widths": widths}


@main.command("eval")
@click.option("--data", required=True, type=click.Path(exists=True), help="Class folders (e.g. fer2013/val), a split folder, or a Kaggle CSV.")
@click.option("--model", default=registry.DEFAULT_EMOTION_MODEL, show_default=True, help="Emotion model: a name or a checkpoint path.")
@click.option("--split", default="val", show_default=True, help="Which split when --data holds several.")
@click.option("--tta", is_flag=True, help="Test-time augmentation: mirror and shifted crops, averaged.")
@click.option("--labels", "label_source", type=click.Choice(["fer2013", "ferplus"]), default="fer2013", show_default=True,
              help="The images' own labels, or FER+'s majority votes (images without a clear majority left out).")
@click.option("--votes", type=click.Path(exists=True, dir_okay=False), default=None,
              help="FER+ fer2013new.csv (default: ferplus/fer2013new.csv beside the data folder).")
@click.option("--through-detector", is_flag=True,
              help="Score the faces the pipeline's way: each upscaled 4x, padded, detected, cropped, classified.")
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
              help="Also write eval.json, confusion_matrix.png and reliability.png here.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@exits_on_error
def evaluate_command(data, model, split, tta, label_source, votes, through_detector, output, as_json):
    """Accuracy, macro-F1, per-class scores, the confusion matrix and the calibration of an emotion model.

    Calibration: the expected calibration error (ECE) over 15 equal-width confidence bins, and with -o a
    reliability diagram.

    \b
    Examples:
      emoray eval --data ../shared/data/fer2013/val --model mini-xception
      emoray eval --data ../shared/data/fer2013 --split val --model emoray-fer.pt --tta -o report/
      emoray eval --data ../shared/data/fer2013/val --labels ferplus
      emoray eval --data ../shared/data/fer2013/val --through-detector
    """
    import numpy as np

    from models import EmotionClassifier, FaceDetector
    from models.datasets import ferplus_majority_targets, ferplus_votes_beside, read_dataset
    from models.evaluate import evaluate, format_text, write_report

    splits = read_dataset(data)
    if len(splits) > 1 and split not in splits:
        raise click.BadParameter(f"no split {split!r} in {data} (has {sorted(splits)})", param_hint="--split")
    dataset = splits[split] if split in splits else next(iter(splits.values()))
    targets = None
    if label_source == "ferplus":
        votes = votes or ferplus_votes_beside(data)
        if votes is None:
            raise click.BadParameter(f"no ferplus/fer2013new.csv in or beside {data}: give it with --votes",
                                     param_hint="--labels")
        kept, targets = ferplus_majority_targets(dataset, votes)
        if not kept.any():
            raise click.BadParameter(f"none of the images of {data} has a FER+ majority vote in {votes}",
                                     param_hint="--labels")
        dataset = dataset.subset(np.flatnonzero(kept))
    detector = FaceDetector(device="cpu", det_size=None) if through_detector else None
    result = evaluate(EmotionClassifier(model, device="cpu"), dataset, tta=tta, targets=targets, detector=detector)
    result["labels_from"] = label_source
    if output:
        write_report(result, output)
    click.echo(json.dumps(result, indent=2) if as_json else format_text(result))


from pipeline.cli_cluster import register as _register_cluster_commands  # noqa: E402  submit, status, logs, stop

_register_cluster_commands(main)

if __name__ == "__main__":
    main()
