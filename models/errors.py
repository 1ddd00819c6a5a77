"""emoray's error types. Each also inherits the built-in a caller would naturally catch."""


class EmorayError(Exception):
    """Base of every error emoray raises on purpose."""


class WeightsError(EmorayError, ValueError):
    """Model weights are missing, corrupt, of the wrong format, or fail their checksum."""


class WeightsFetchError(EmorayError, OSError):
    """Weights could not be downloaded (no network, unknown package, failed pip)."""
