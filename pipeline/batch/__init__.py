"""Batch mode: recordings in, per-frame Parquet, annotated videos and manifests out.

``scheduler`` is the driver (discover, plan, schedule, progress), ``flow`` its loop, ``video`` the per-video
unit that finishes each video where it runs, ``output`` OUT on a disk or in an object store.
"""

from pipeline.batch.output import check_output_writable
from pipeline.batch.scheduler import BatchJob, connect_for
from pipeline.batch.video import VideoOutcome

__all__ = ["BatchJob", "VideoOutcome", "check_output_writable", "connect_for"]
