"""``python -m pipeline.cli``: the ``emoray`` command."""

from pipeline.cli import main

main()
