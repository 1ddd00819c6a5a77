"""emoray's checkpoint format: a plain dict of tensors and primitives, loadable with ``weights_only=True``.

Detector: ``{"format": "emoray.detector", "backbone", "state_dict"}``.
Emotion: ``{"format": "emoray.emotion", "arch", "arch_kwargs", "preprocess", "labels", "state_dict",
"metrics"}`` and, from ``emoray train``, ``"temperature"`` (``models.calibration``; 1 when absent): the
architecture, its preprocessing and calibration travel with the weights, so any checkpoint plugs into
``EmotionClassifier`` unchanged.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from models.errors import WeightsError

if TYPE_CHECKING:  # torch is imported where weights are loaded, not by every process that reads Preprocess
    import torch

DETECTOR_FORMAT = "emoray.detector"
EMOTION_FORMAT = "emoray.emotion"


@dataclass(frozen=True)
class Preprocess:
    """How a face becomes network input: crop, resize, normalize.

    The crop is the detection box made square around its center, grown by ``margin_px`` pixels
    and ``margin_frac`` of its side on every side (the ``fer`` package uses 10 px), filled with the
    frame's bottom-rows mean where it leaves the frame, resized to ``input_size``; pixels are
    scaled to [0, 1], then ``(x - mean) / std``. With ``mirror_average`` the classifier averages
    each face's probabilities with those of its mirror image (faces are nearly left-right symmetric,
    so this cancels some of the network's noise at the cost of a second, batched, pass). ``test_scales``
    does the same across zooms of the input about its center (1.05: 5% closer; each scale is one more
    pass, and its mirror another): a crop's framing varies with the detector, and the net's answer with it.
    """

    input_size: int
    channels: int  # 1 = gray, 3 = RGB
    mean: float
    std: float
    margin_px: float = 0.0
    margin_frac: float = 0.0
    mirror_average: bool = False
    test_scales: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        scales = tuple(float(scale) for scale in self.test_scales)  # a saved list, or a user's, as a tuple
        if not scales or min(scales) <= 0:
            raise ValueError(f"test_scales must be positive zoom factors, got {self.test_scales!r}")
        object.__setattr__(self, "test_scales", scales)

    @classmethod
    def from_dict(cls, values: dict) -> "Preprocess":
        return cls(**{key: values[key] for key in cls.__dataclass_fields__ if key in values})


def detector_checkpoint(state_dict: dict[str, torch.Tensor], backbone: str) -> dict:
    return {"format": DETECTOR_FORMAT, "backbone": backbone, "state_dict": state_dict}


def emotion_checkpoint(
    state_dict: dict[str, torch.Tensor],
    *,
    arch: str,
    arch_kwargs: dict,
    preprocess: Preprocess,
    labels: tuple[str, ...] | list[str],
    metrics: dict | None = None,
) -> dict:
    return {
        "format": EMOTION_FORMAT,
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs),
        "preprocess": asdict(preprocess),
        "labels": list(labels),
        "state_dict": state_dict,
        "metrics": dict(metrics or {}),
    }


def load(path: Path, role: str) -> dict:
    """Read a checkpoint safely; a raw Pytorch_Retinaface state dict is converted on the fly."""
    import torch

    from models.retinaface.convert import backbone_of, state_dict_from_pytorch_retinaface

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, ValueError) as error:
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({error})") from error
    if not isinstance(payload, dict):
        raise WeightsError(f"{path}: expected a dict checkpoint, got {type(payload).__name__}")
    expected = DETECTOR_FORMAT if role == "detector" else EMOTION_FORMAT
    if payload.get("format") == expected:
        return payload
    if role == "detector" and "format" not in payload:
        state = state_dict_from_pytorch_retinaface(payload)
        return detector_checkpoint(state, backbone_of(state)) | {"name": path.stem}
    raise WeightsError(f"{path}: not a {role} checkpoint (format {payload.get('format')!r})")


def save(payload: dict, path: Path) -> None:
    """Write a checkpoint (or any torch payload) atomically: a reader sees the old file or the new one, never
    half of one; a failed write leaves no temporary file."""
    import tempfile

    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        temporary = Path(handle.name)
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
