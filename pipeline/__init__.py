"""How frames are processed: sources, the face step, tracking, sinks, batch and live mode, the CLI.

``run_batch`` and ``live`` (``pipeline.api``) are the Python front door; they are imported on first
use, so ``python -m pipeline.cli`` and small helpers stay light.
"""

__all__ = ["live", "run_batch"]


def __getattr__(name: str):
    if name in __all__:
        from pipeline import api

        return getattr(api, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
