"""A job: what to process, where to write, with which options."""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import asdict, dataclass, field

from models.errors import EmorayError
from models.registry import DEFAULT_DETECTOR, DEFAULT_EMOTION_MODEL

PERSONS_MODES = ("off", "video", "across")


class OptionError(EmorayError, ValueError):
    """An option's value is refused; ``name`` is the option's field name (``det_size``)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


@dataclass(frozen=True)
class Range:
    """The values a numeric option takes: finite, from ``low`` (excluded when ``low_open``) to ``high``,
    whole numbers only when ``integer``. ``RANGES`` holds them once: the dataclasses below check them
    wherever options are made (the command line, ``run_batch``, ``live``, a job spec read back) and
    the command line's option types show them in ``--help``."""

    low: float
    high: float
    low_open: bool = False
    integer: bool = False
    unit: str = ""

    def describe(self) -> str:
        low, high = (int(x) if x == int(x) else x for x in (self.low, self.high))
        bounds = f"{'(' if self.low_open else '['}{low}, {high}]"
        return f"{'an integer' if self.integer else 'a number'} in {bounds}" + (f" {self.unit}" if self.unit else "")

    def contains(self, value: object) -> bool:
        """False for NaN and infinities (every comparison with NaN is false, so they need their own test)."""
        if isinstance(value, bool) or not isinstance(value, numbers.Integral if self.integer else numbers.Real):
            return False
        return math.isfinite(value) and (self.low < value if self.low_open else self.low <= value) and value <= self.high

    def check(self, name: str, value: object) -> None:
        if not self.contains(value):
            raise OptionError(name, f"{name} must be {self.describe()}, but got {value!r}")


RANGES = {
    "det_size": Range(32, 8192, integer=True, unit="pixels"),  # or None: the frame's own size
    "min_face": Range(0, 8192, unit="pixels"),
    "score_threshold": Range(0, 1),
    "batch_size": Range(1, 1024, integer=True, unit="frames"),
    "smoothing_seconds": Range(0, 3600, unit="seconds"),
    "min_episode_seconds": Range(0, 86400, unit="seconds"),
    "fps": Range(0, 1000, low_open=True, unit="frames per second"),  # or None: every frame
    "segment_seconds": Range(0, 86400, low_open=True, unit="seconds"),
    # live mode
    "roll_seconds": Range(0, 86400, low_open=True, unit="seconds"),
    "duration": Range(0, 366 * 86400, low_open=True, unit="seconds"),
    "timeout": Range(0, 3600, low_open=True, unit="seconds"),
}
NONE_ALLOWED = frozenset({"det_size", "fps"})
ROLL_SECONDS = 10.0  # live mode starts a new Parquet part this often unless told otherwise


def check_ranges(options: object, names: tuple[str, ...]) -> None:
    """Check the fields ``names`` of ``options`` against ``RANGES`` (None passes where it has a meaning)."""
    for name in names:
        value = getattr(options, name)
        if value is not None or name not in NONE_ALLOWED:
            RANGES[name].check(name, value)


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

    NUMERIC = ("det_size", "min_face", "score_threshold", "batch_size", "smoothing_seconds", "min_episode_seconds")

    def __post_init__(self) -> None:
        if self.backend not in ("auto", "torch", "onnx"):
            raise OptionError("backend", f"backend must be one of auto, torch, onnx, but got {self.backend!r}")
        if self.persons not in PERSONS_MODES:
            raise OptionError("persons", f"persons must be one of {', '.join(PERSONS_MODES)}, but got {self.persons!r}")
        check_ranges(self, self.NUMERIC)

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
        check_ranges(self, ("fps", "segment_seconds"))

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

    @classmethod
    def from_dict(cls, payload: dict) -> "JobSpec":
        """The spec ``to_dict`` gave (as ``OUT/job.json`` holds it), its options checked as when first made.

        Raises:
            OptionError: for an option out of its range (JSON lets NaN and Infinity through).
            TypeError, KeyError: when ``payload`` is not such a spec.
        """
        return cls(inputs=tuple(payload["inputs"]), output=payload["output"],
                   options=RunOptions(**payload["options"]), glob=payload.get("glob"),
                   force=bool(payload.get("force", False)))


@dataclass(frozen=True)
class LiveSourceOptions:
    """How ``emoray live`` opens and keeps reading a live source."""

    rtsp_transport: str = "tcp"
    timeout: float = 5.0  # seconds for connecting and for each read
    max_retries: int = 5  # failed attempts in a row before giving up
    backoff_initial: float = 0.5  # seconds before the first retry, doubled per failure
    backoff_max: float = 8.0
    realtime: bool = False  # pace a file at its frame rate (newest frame first) instead of every frame at full speed

    def __post_init__(self) -> None:
        for name in ("timeout", "backoff_initial", "backoff_max"):
            RANGES["timeout"].check(name, getattr(self, name))
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise OptionError("max_retries", f"max_retries must be an integer >= 0, but got {self.max_retries!r}")
