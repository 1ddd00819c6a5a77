"""``emoray run`` of one clip in a fresh process, for ``emoray bench``: prints when its first result came.

Run as ``python -m pipeline.bench.fresh_run CLIP OUT OPTIONS_JSON``; the bench times the process and
samples the memory of its tree (the driver and its embedded Ray), as a user's ``emoray run`` would use.
"""

from __future__ import annotations

import json
import sys
import time

import psutil

PROCESS_STARTED = psutil.Process().create_time()


def main() -> None:
    clip, out, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    import ray

    from pipeline.api import run_batch

    first_result: list[float] = []

    def on_progress(state: dict) -> None:
        if state["frames"] and not first_result:
            first_result.append(time.time() - PROCESS_STARTED)

    (outcome,) = run_batch([clip], out, force=True, on_progress=on_progress, **options)
    ray.shutdown()  # as emoray run does
    if outcome.status != "complete":
        sys.exit(f"{clip}: {outcome.error}")
    print(json.dumps({"first_result_s": first_result[0] if first_result else None, "frames": outcome.frames,
                      "faces": outcome.faces}))


if __name__ == "__main__":
    main()
