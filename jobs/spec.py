"""A job: what to process, where to write, with which options."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from models.registry import DEFAULT_DETECTOR, DEFAULT_EMOTION_MODEL


@dataclass(frozen=True)
class RunOptions:
    """Options of ``emoray run``; those in ``RESULT_OPTIONS`` change the results and so the fingerprint."""

    detector: str = DEFAULT_DETECTOR
    emotion_model: str = DEFAULT_EMOTION_MODEL
    fps: float | None = None  # sample about this many frames per second; None = every frame
    min_face: float = 0.0  # pixels, shorter box side
    det_size: int | None = 640  # longer side of the detector input; None = native resolution
    score_threshold: float = 0.6
    batch_size: int = 8
    device: str = "auto"
    annotate: bool = True
    segment_seconds: float = 60.0

    RESULT_OPTIONS = ("fps", "min_face", "det_size", "score_threshold")

    def __post_init__(self) -> None:
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps must be positive, but got {self.fps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, but got {self.batch_size}")
        if self.min_face < 0:
            raise ValueError(f"min_face must be >= 0 pixels, but got {self.min_face}")
        if self.det_size is not None and self.det_size < 32:
            raise ValueError(f"det_size must be at least 32 pixels, but got {self.det_size}")

    def fingerprint(self, model_ids: dict[str, str]) -> str:
        """Identifies what the results depend on: result-changing options and the exact weights."""
        payload = {name: getattr(self, name) for name in self.RESULT_OPTIONS} | {"models": model_ids}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class JobSpec:
    """Inputs (files and directories, as the cluster sees them), the output directory, and options."""

    inputs: tuple[str, ...]
    output: str
    options: RunOptions = field(default_factory=RunOptions)
    glob: str | None = None
    force: bool = False

    def to_dict(self) -> dict:
        return {"inputs": list(self.inputs), "output": self.output, "glob": self.glob, "force": self.force,
                "options": self.options.to_dict()}
