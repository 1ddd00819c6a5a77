"""``emoray run`` and ``emoray demo``: recordings through batch mode on Ray."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from jobs.spec import RANGES, JobSpec, RunOptions
from models import registry
from pipeline.cli.options import (
    EXIT_FAILED, EXIT_OK, address_option, build_options, dashboard_option, exits_on_error, model_options, range_type,
)
from pipeline.cli.results import report_after_run


@click.command()
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

    from jobs.cluster import show_worker_output, silence_worker_output
    from jobs.lock import output_lock
    from pipeline.batch import BatchJob, check_output_writable, connect_for
    from pipeline.progress import JobProgress, failed_outcomes, stop_line, summary_json, summary_table
    from pipeline.stopping import stop_on_signals

    options = build_options(RunOptions, **model_options, fps=fps, annotate=not no_annotate)
    spec = JobSpec(inputs=tuple(paths), output=output, options=options, glob=glob_pattern, force=force)
    check_output_writable(output)
    with output_lock(output), stop_on_signals() as signals:
        started_ray = not ray.is_initialized()  # main() called in a process whose Ray runs on after it (a test's)
        connect_for(options, address, dashboard=dashboard)
        signals.install()  # ray.init may have put its own SIGTERM handler in place of ours
        signals.request.call_when_set(silence_worker_output)  # a stopped run ends with one line
        try:
            job = BatchJob(spec, stop=signals.request)
            if placement := job.placement():
                click.echo(f"emoray: {placement}", err=True)
            with JobProgress(Console(stderr=True)) as progress:
                job.on_progress = progress.update
                outcomes = job.run()
        finally:
            if started_ray:
                ray.shutdown()  # now, not at exit, where Ray first waits half a second for late worker messages
            else:
                show_worker_output()  # the Ray this run did not start goes on as it was
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
        report_after_run(output)
    if failed:
        click.echo(f"{len(failed)} of {len(outcomes)} inputs failed", err=True)
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


@click.command()
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
