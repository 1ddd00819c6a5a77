"""emoray from Python: ``run_batch`` for recordings, ``live`` for cameras; what ``emoray run`` and
``emoray live`` do, without the command line.

    from pipeline import run_batch, live

    outcomes = run_batch(["recordings/"], "results/", fps=5, annotate=False)
    with live("rtsp://camera.local:554/stream") as results:
        for batch in results:            # one FaceBatch per processed frame, tracked
            print(batch.frame_index[0], batch.track_id, batch.probabilities.argmax(axis=1))
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from jobs.spec import RANGES, JobSpec, LiveSourceOptions, ModelOptions, RunOptions

if TYPE_CHECKING:  # batch mode imports Ray; live mode in this process does not need it
    from pipeline.batch import VideoOutcome


def run_batch(inputs: str | os.PathLike | Sequence[str | os.PathLike], output: str | os.PathLike, *, glob: str | None = None,
              force: bool = False, address: str | None = None, dashboard: bool = False,
              on_progress: Callable[[dict], None] | None = None, **options) -> list[VideoOutcome]:
    """Process files and folders into ``output`` as ``emoray run`` does; returns one outcome per input.

    Args:
        inputs: video and image files, folders (searched recursively) or object-store URIs; one of
            them alone may be given as it is (a string is a path, never a list of characters).
        output: the output folder (or URI): Parquet, annotated videos, manifests.
        glob: only inputs whose relative path or name matches.
        force: redo videos that are already complete.
        address: a Ray cluster to join; default the one this process is connected to, else an
            embedded local Ray (lean: no dashboard unless ``dashboard``).
        dashboard: start Ray's dashboard with an embedded Ray.
        on_progress: called with {"done", "total", "frames", "active"} as the job advances.
        **options: the options of ``emoray run`` by their names (``jobs.spec.RunOptions``), e.g.
            ``fps=5``, ``annotate=False``, ``min_face=40``, ``det_size=None``, ``emotion_model="mini-xception"``.

    Raises:
        TypeError: for an option ``emoray run`` does not have. ValueError: for a bad option value or no
            ``output`` (None is not a folder: it would have been written to ``./None/``).
        EmorayError: when the output cannot be written, another run holds it, or nothing is found.
    """
    from pipeline.batch import BatchJob, connect_for

    if isinstance(inputs, (str, bytes, os.PathLike)):  # one path, not a sequence of one-character paths
        inputs = [os.fsdecode(inputs)]
    if output is None or not str(output):
        raise ValueError(f"output must be a folder or a URI, but got {output!r}")
    spec = JobSpec(inputs=tuple(os.fsdecode(path) for path in inputs), output=os.fsdecode(output),
                   options=RunOptions(**options), glob=glob, force=force)
    connect_for(spec.options, address, dashboard=dashboard)
    return BatchJob(spec, on_progress=on_progress).run()


@contextlib.contextmanager
def live(sources: str | os.PathLike | Sequence[str | os.PathLike], *, realtime: bool = LiveSourceOptions.realtime,
         rtsp_transport: str = LiveSourceOptions.rtsp_transport, timeout: float = LiveSourceOptions.timeout,
         max_retries: int = LiveSourceOptions.max_retries, duration: float | None = None, address: str | None = None,
         **options) -> Iterator[Iterator]:
    """Follow cameras (or replay files) as ``emoray live`` does; yields an iterator of results as they come.

    One source (a string or path): each result is the tracked ``FaceBatch`` of one frame, with
    ``capture_time``, ``latency_ms`` and, when known, each face's ``person_id``. Several (a list): each
    result is ``(source, batch)``, the newest frames of all of them found in one detector and one classifier
    batch. The iterator ends when every source has ended or failed for good (after ``max_retries``
    reconnects), or after ``duration`` seconds; leaving the block stops reading. A file is replayed frame by
    frame unless ``realtime``. ``address``: run the models as actors on that Ray cluster (default in this
    process). ``realtime``, ``rtsp_transport``, ``timeout`` and ``max_retries`` are the source options of
    ``emoray live`` (``jobs.spec.LiveSourceOptions``), ``**options`` its model options (``jobs.spec.ModelOptions``).
    """
    from pipeline.live import LiveSession, LiveSource, load_models
    from pipeline.sources.live import LiveReader

    one = isinstance(sources, (str, os.PathLike))
    model_options = ModelOptions(**options)
    if duration is not None:
        RANGES["duration"].check("duration", duration)
    if address:
        from jobs.cluster import connect

        connect(address)
    reader_options = LiveSourceOptions(rtsp_transport=rtsp_transport, timeout=timeout, max_retries=max_retries,
                                       realtime=realtime)
    readers = [LiveReader(str(source), reader_options) for source in ([sources] if one else sources)]
    models = load_models(model_options, use_ray=bool(address))
    try:  # the models are made here, so they are closed here, after the session that uses them
        session = LiveSession([LiveSource(reader, [], models, model_options) for reader in readers], models,
                              model_options)
        stop = threading.Event()
        session.start()
        try:
            results = session.results(stop, duration)
            yield (batch for _, batch in results) if one else ((source.name, batch) for source, batch in results)
        finally:
            stop.set()
            session.close()
    finally:
        models.close()
