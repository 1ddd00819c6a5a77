"""``emoray live``: cameras, streams and files followed as they come."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from jobs.spec import RANGES, ROLL_SECONDS, LiveSourceOptions, ModelOptions
from pipeline.cli.options import EXIT_FAILED, EXIT_OK, build_options, exits_on_error, model_options, range_type


def _host_port(value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"expected [HOST:]PORT, e.g. 8080 or 0.0.0.0:8080, but got {value!r}", param_hint="--serve")
    return host or "127.0.0.1", int(port)


@click.command()
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
