"""Errors of the video pipeline; each names the file and the reason."""

from models.errors import EmorayError


class VideoError(EmorayError, ValueError):
    """A file cannot be read as video: empty, not a video, truncated, or undecodable."""


class OutputError(EmorayError, OSError):
    """The output directory cannot be written."""


class InputError(EmorayError, ValueError):
    """A job's inputs hold nothing to process."""
