"""The ``emoray`` command line. Commands only parse options and call library functions."""

from __future__ import annotations

import json
import logging
import sys

import click

from models import registry
from models.errors import EmorayError

EXIT_OK, EXIT_FAILED = 0, 1


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
