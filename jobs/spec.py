"""A job: what to process, where to write, with which options."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from models.registry import DEFAULT_DETECTOR, DEFAULT_EMOTION_MODEL


PERSONS_MODES = ("off", "video", "across")


@dataclass(frozen=True)
class ModelOptions:
    """Which models run, how faces are found and how their emotions are smoothed over time: the options
    ``emoray run`` and ``emoray live`` share."""

    detector: str = DEFAULT_DETECTOR
    emotion_model: str = DEFAULT_EMOTION_MODEL
    det_size: int | None = 640  # longer side of the detector input; None = native resolution
    min_face: float = 0.0  # pixels, shorter box side
    score_threshold: float = 0.6
    device: str = "auto"
    backend: str = "auto"  # auto: onnxruntime on CPUs, torch on GPUs; part of the model ids
    batch_size: int = 8  # frames per detector call
    smoothing_seconds: float = 1.0  # time constant of each track's moving average of emotions; 0 = none
    min_episode_seconds: float = 0.5  # shortest stretch of one smoothed emotion that counts as an episode
    persons: str = "video"  # off: tracks only; video: tracks joined into persons per video (live: per session);
    # across: also linked across the job's videos (emoray run)
    keep_embeddings: bool = False  # write each person's mean face embedding (biometric data) to the persons table

    def __post_init__(self) -> None:
        if self.backend not in ("auto", "torch", "onnx"):
            raise ValueError(f"backend must be one of auto, torch, onnx, but got {self.backend!r}")
        if self.persons not in PERSONS_MODES:
            raise ValueError(f"persons must be one of {', '.join(PERSONS_MODES)}, but got {self.persons!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, but got {self.batch_size}")
        if self.min_face < 0:
            raise ValueError(f"min_face must be >= 0 pixels, but got {self.min_face}")
        if self.det_size is not None and self.det_size < 32:
            raise ValueError(f"det_size must be at least 32 pixels, but got {self.det_size}")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], but got {self.score_threshold}")
        for name in ("smoothing_seconds", "min_episode_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 seconds, but got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RunOptions(ModelOptions):
    """Options of ``emoray run``; those in ``RESULT_OPTIONS`` change the results and so the fingerprint."""

    fps: float | None = None  # sample about this many frames per second; None = every frame
    annotate: bool = True
    segment_seconds: float = 60.0

    RESULT_OPTIONS = ("fps", "min_face", "det_size", "score_threshold", "smoothing_seconds", "min_episode_seconds",
                      "persons", "keep_embeddings")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps must be positive, but got {self.fps}")

    def fingerprint(self, model_ids: dict[str, str]) -> str:
        """Identifies what the results depend on: result-changing options and the exact weights."""
        payload = {name: getattr(self, name) for name in self.RESULT_OPTIONS} | {"models": model_ids}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


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
