"""Batch mode: recordings in, per-frame Parquet, annotated videos and manifests out.

``scheduler`` is the driver (discover, plan, schedule, progress), ``flow`` its loop, ``video`` the per-video
unit that finishes each video where it runs, ``output`` OUT on a disk or in an object store. The names below
are imported on first use, so live mode, which checks its output folder with ``output``, never imports Ray.
"""

import importlib

_WHERE = {"BatchJob": "pipeline.batch.scheduler", "VideoOutcome": "pipeline.batch.video",
          "check_output_writable": "pipeline.batch.output", "connect_for": "pipeline.batch.scheduler"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> object:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'pipeline.batch' has no attribute {name!r}")
