"""``emoray query`` and ``emoray report``: reading a job's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import click

from models.errors import EmorayError
from pipeline.cli.options import exits_on_error


@click.command()
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


@click.command()
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


def report_after_run(output: str) -> None:
    """``run --report``: the page, or a warning; the run's own outcome stands either way."""
    from pipeline.html_report import write_report

    try:
        click.echo(f"report: {write_report(output)}", err=True)
    except EmorayError as error:
        click.echo(f"emoray: no report: {error}", err=True)
