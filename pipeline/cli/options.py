"""What every ``emoray`` command shares: exit codes, one error-to-exit wrapper, and option blocks declared once."""

from __future__ import annotations

import functools
import math
import sys
from typing import Callable

import click

from jobs.spec import PERSONS_MODES, RANGES, ModelOptions, OptionError, Range
from models.errors import EmorayError

EXIT_OK, EXIT_FAILED = 0, 1
MODEL_OPTION_NAMES = ("detector", "emotion_model", "det_size", "min_face", "score_threshold", "batch_size", "device",
                      "backend", "smoothing_seconds", "min_episode_seconds", "persons", "keep_embeddings")


def exits_on_error(function: Callable) -> Callable:
    """An ``EmorayError`` (a bad file, an unreachable cluster, ...) ends the command with ``emoray: <reason>``
    on stderr and exit code 1; anything else is a bug and keeps its traceback."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except EmorayError as error:
            click.echo(f"emoray: {error}", err=True)
            sys.exit(EXIT_FAILED)

    return wrapper


def address_option(function: Callable) -> Callable:
    """``--address`` of an existing Ray cluster, shared by every command that runs on Ray."""
    return click.option(
        "--address", envvar="RAY_ADDRESS", default=None,
        help="Ray cluster to join (e.g. ray://head:10001 or auto); default: an embedded local Ray. Env: RAY_ADDRESS.",
    )(function)


def dashboard_option(function: Callable) -> Callable:
    """``--dashboard``: the embedded Ray's dashboard, which a job on one machine starts without by default."""
    return click.option(
        "--dashboard", is_flag=True,
        help="Start Ray's dashboard (http://127.0.0.1:8265) with the embedded Ray; off by default to start faster.",
    )(function)


class FiniteFloatRange(click.FloatRange):
    """click's ``FloatRange`` without NaN and infinities, which it lets through (every comparison with
    NaN is false): the type of every float option, so that ``--help`` still shows the range."""

    def convert(self, value, parameter, context) -> float:
        number = super().convert(value, parameter, context)
        if number is not None and not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number in the range {self._describe_range()}.", parameter, context)
        return number


def range_type(values: Range) -> click.ParamType:
    """The click type of an option whose values are ``values`` (one of ``jobs.spec.RANGES``)."""
    if values.integer:
        return click.IntRange(int(values.low), int(values.high))
    return FiniteFloatRange(values.low, values.high, min_open=values.low_open)


class DetectorSize(click.ParamType):
    """``--det-size``: pixels (32 to 8192), or ``native`` for the frame's own size (None)."""

    name = "PIXELS|native"

    def convert(self, value, parameter, context) -> int | None:
        if value is None or isinstance(value, int) and RANGES["det_size"].contains(value):
            return value
        if str(value).lower() in ("native", "none"):
            return None
        try:
            pixels = int(value)
        except ValueError:
            pixels = None
        if pixels is None or not RANGES["det_size"].contains(pixels):
            self.fail(f"expected {RANGES['det_size'].describe()} or 'native', but got {value!r}", parameter, context)
        return pixels


def model_options(function: Callable) -> Callable:
    """The model, detection and smoothing options of ``run`` and ``live``, passed on as one
    ``model_options`` dict (the fields of ``jobs.spec.ModelOptions``, whose defaults they show)."""
    options = [
        click.option("--detector", default=ModelOptions.detector, show_default=True,
                     help="Detector weights: a name, a checkpoint path or a URL."),
        click.option("--emotion-model", default=ModelOptions.emotion_model, show_default=True,
                     help="Emotion weights: a name or a checkpoint path."),
        click.option("--min-face", type=range_type(RANGES["min_face"]), default=ModelOptions.min_face, show_default=True,
                     help="Ignore faces smaller than this many pixels (shorter side)."),
        click.option("--det-size", type=DetectorSize(), default=ModelOptions.det_size, show_default=True,
                     help="Longer side of the detector input in pixels (32-8192), or 'native'."),
        click.option("--score-threshold", type=range_type(RANGES["score_threshold"]), default=ModelOptions.score_threshold, show_default=True,
                     help="Minimum face score."),
        click.option("--batch-size", type=range_type(RANGES["batch_size"]), default=ModelOptions.batch_size, show_default=True,
                     help="Frames per detector call."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=ModelOptions.device, show_default=True,
                     help="Where the models run."),
        click.option("--backend", type=click.Choice(["auto", "torch", "onnx"]), default=ModelOptions.backend, show_default=True,
                     help="Inference engine: onnxruntime on CPUs and torch on GPUs with auto."),
        click.option("--smoothing-seconds", type=range_type(RANGES["smoothing_seconds"]),
                     default=ModelOptions.smoothing_seconds, show_default=True,
                     help="Time constant of each track's moving average of emotions (0: none)."),
        click.option("--persons", type=click.Choice(PERSONS_MODES), default=ModelOptions.persons, show_default=True,
                     help="Join tracks into persons by face appearance: per video (live: per session), also "
                          "across the job's videos, or off (tracks only)."),
        click.option("--keep-embeddings", is_flag=True,
                     help="Also write each person's mean face embedding (biometric data) to the persons table."),
        click.option("--min-episode", "min_episode_seconds", type=range_type(RANGES["min_episode_seconds"]),
                     default=ModelOptions.min_episode_seconds,
                     show_default=True, help="Shortest stretch of one smoothed emotion that counts as an episode, seconds."),
    ]

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        kwargs["model_options"] = {name: kwargs.pop(name) for name in MODEL_OPTION_NAMES}
        return function(*args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def option_flag(name: str) -> str:
    """The command-line option of a ``RunOptions`` field: ``--min-face`` for ``min_face``."""
    return {"min_episode_seconds": "--min-episode"}.get(name, "--" + name.replace("_", "-"))


def build_options(cls: type[ModelOptions], **values) -> ModelOptions:
    """``ModelOptions`` or ``RunOptions`` from command-line values; a refused value is a usage error
    (exit 2) naming its option."""
    try:
        return cls(**values)
    except OptionError as error:
        raise click.BadParameter(str(error), param_hint=option_flag(error.name)) from error
    except ValueError as error:
        raise click.BadParameter(str(error)) from error
