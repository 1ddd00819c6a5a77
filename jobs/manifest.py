"""Per-video manifests and ``job.json``: what makes a job resumable and auditable.

``OUT/manifest/<video_id>.json`` is written last for each video, atomically; a video is complete
when its manifest says so, with the same fingerprint, and its outputs exist.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

from jobs.files import move_into_place

COMPLETE, FAILED = "complete", "failed"


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write JSON under a temporary name in the same folder, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as handle:
        json.dump(payload, handle, indent=2, default=str)
        temporary = Path(handle.name)
    move_into_place(temporary, path)


def manifest_path(out: Path, video_id: str) -> Path:
    return out / "manifest" / f"{video_id}.json"


def read_manifest(out: Path, video_id: str) -> dict | None:
    try:
        return json.loads(manifest_path(out, video_id).read_text())
    except (OSError, ValueError):
        return None


def read_manifests(out: Path) -> list[dict]:
    """Every readable manifest of OUT (local), in file order; anything that is not an emoray manifest is left out."""
    manifests = []
    for path in sorted(Path(out, "manifest").glob("*.json")):
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict) and manifest.get("video_id"):
            manifests.append(manifest)
    return manifests


def is_complete(manifest: dict | None, fingerprint: str, *, annotate: bool,
                exists: Callable[[str], bool] = os.path.exists) -> bool:
    """True when a previous run finished this video with the same models and options.

    ``exists`` checks that an output the manifest names is still there (a URI's in its store).
    """
    if not manifest or manifest.get("status") != COMPLETE or manifest.get("fingerprint") != fingerprint:
        return False
    outputs = manifest.get("outputs", {})
    wanted = ["faces", "frames", "tracks", "episodes", "persons"] + (["annotated"] if annotate else [])
    return all(outputs.get(name) and exists(outputs[name]) for name in wanted)
