"""The ``emoray`` command line. Commands only parse options and call library functions.

One module per group of commands: ``run`` (run, demo), ``cluster`` (submit, status, logs, stop), ``live``,
``results`` (query, report), ``models`` (models, train, eval), ``bench``; ``options`` holds what they share.
"""

from __future__ import annotations

import logging

import click

from pipeline.cli import bench, cluster, live, models, results, run


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose: bool) -> None:
    """emoray: find faces in video and recognize their emotions, on Ray.

    Exit codes: 0 when everything succeeded, 1 when any work failed, 2 for bad arguments.
    Weights are cached under $EMORAY_HOME (default ~/.cache/emoray).
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="emoray: %(message)s")


for _command in (run.run, run.demo, live.live, results.query, results.report, models.models, models.train,
                 models.evaluate_command, bench.bench):
    main.add_command(_command)
cluster.register(main)  # submit (with run's options), status, logs, stop

__all__ = ["main"]
