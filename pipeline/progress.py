"""What a person sees while a job runs and when it ends: a progress line and a summary table."""

from __future__ import annotations

import time
from dataclasses import asdict

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from pipeline.batch import VideoOutcome

_STATUS_STYLE = {"complete": "green", "skipped": "cyan", "failed": "bold red"}


class JobProgress:
    """Videos done/total, frames/s and ETA, on stderr; silent when stderr is not a terminal."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]videos"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=True,
        )
        self._task = self._progress.add_task("videos", total=None, rate="")
        self._started = time.monotonic()

    def __enter__(self) -> "JobProgress":
        if self._progress.console.is_terminal:  # elsewhere rich would still end with an empty line
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress.live.is_started:
            self._progress.stop()

    def update(self, state: dict) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        self._progress.update(self._task, total=state["total"], completed=state["done"],
                              rate=f"{state['frames']} frames, {state['frames'] / elapsed:.1f} frames/s")


def summary_table(outcomes: list[VideoOutcome]) -> Table:
    table = Table(title="emoray run", show_lines=False)
    for column in ("video", "frames", "faces", "dominant emotion", "status", "error"):
        table.add_column(column, overflow="fold", justify="right" if column in ("frames", "faces") else "left")
    for o in outcomes:
        style = _STATUS_STYLE.get(o.status, "")
        table.add_row(o.path, str(o.frames), str(o.faces), o.dominant_emotion or "-",
                      f"[{style}]{o.status}[/]", o.error or "")
    return table


def failed_outcomes(outcomes: list[VideoOutcome]) -> list[VideoOutcome]:
    """What fails a run (exit 1): failed videos, and complete ones with an error (their rows are kept,
    their annotated video could not be made)."""
    return [o for o in outcomes if o.status == "failed" or (o.status == "complete" and o.error)]


def summary_json(outcomes: list[VideoOutcome], out: str) -> dict:
    return {"output": out, "failed": len(failed_outcomes(outcomes)), "videos": [asdict(o) for o in outcomes]}


def stop_line(outcomes: list[VideoOutcome], signal_name: str | None, out: str) -> str:
    """The one line a stopped run ends with: what is kept, what is not, how to go on."""
    counts = {status: sum(o.status == status for o in outcomes) for status in ("complete", "skipped", "failed", "interrupted")}
    return (f"emoray: stopped by {signal_name or 'request'}: {counts['complete']} videos complete, "
            f"{counts['skipped']} skipped, {counts['failed']} failed, {counts['interrupted']} unfinished "
            f"(nothing of them is in {out}); rerun the same command to finish")
