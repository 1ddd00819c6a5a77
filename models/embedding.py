"""``FaceEmbedder``: who a face is, as dlib's 128-d ResNet face descriptor (99.38% on LFW), for telling persons apart.

Two faces of one person lie closer than about 0.6 (Euclidean) in this space, two people's farther.
The network wants a 150x150 RGB chip aligned as ``dlib.get_face_chip`` aligns it (eyes and nose at fixed
places, 25% padding). The chip is made here from RetinaFace's own five landmarks (``face_chips``): a
similarity transform onto where those five points lie in dlib's chip (``CHIP_LANDMARKS``). Measured on the
shared clips against dlib's way (its 5-point shape predictor run on the box, then ``get_face_chip``): the
same person-separation or better, no 9 MB shape model, and ~1.2-4 ms a face less.

The weights come inside the ``face_recognition_models`` package from the package index (CC0; dlib is under
the Boost licence): nothing is downloaded at run time. That package's ``__init__`` imports ``pkg_resources``,
which recent setuptools no longer ship, so its folder is found without importing it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import cv2
import numpy as np

from models.errors import WeightsError

CHIP_SIZE = 150  # the network's input side, pixels
EMBEDDING_SIZE = 128
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
# Where RetinaFace's landmarks (right eye, left eye, nose tip, right and left mouth corner, the subject's)
# fall in dlib's 150x150 chip (padding 0.25): the median over 609 frontal faces of the shared clips, each
# chip made by dlib's 5-point shape predictor and get_face_chip (spread 3-7 px).
CHIP_LANDMARKS = np.array([[46.8, 46.3], [101.7, 46.1], [73.8, 74.7], [47.7, 101.7], [99.0, 101.7]], np.float64)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(2, 3) rotation, uniform scale and shift that maps the (k, 2) ``source`` points closest (least squares)
    onto ``target``; the points written as complex numbers, it is the line fit target = a * source + b."""
    source = np.asarray(source, np.float64)
    z, w = source[:, 0] + 1j * source[:, 1], target[:, 0] + 1j * target[:, 1]
    z0, w0 = z - z.mean(), w - w.mean()
    a = np.vdot(z0, w0) / max(np.vdot(z0, z0).real, 1e-12)
    b = w.mean() - a * z.mean()
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])


def face_chips(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Aligned chips of the faces of one frame, ready for ``FaceEmbedder``.

    Args:
        frame: (H, W, 3) uint8 RGB at full resolution, display orientation.
        landmarks: (n, 5, 2) RetinaFace landmarks in pixels of ``frame``.

    Returns:
        (n, 150, 150, 3) uint8 RGB chips (67,500 bytes each); outside the frame is black, as in dlib's chips.
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be an (H, W, 3) uint8 RGB image, but got shape {frame.shape} {frame.dtype}")
    landmarks = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    chips = np.empty((len(landmarks), CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
    for i, points in enumerate(landmarks):
        chips[i] = cv2.warpAffine(frame, similarity_transform(points, CHIP_LANDMARKS), (CHIP_SIZE, CHIP_SIZE),
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return chips


def default_weights() -> Path:
    """The descriptor's weights inside the installed ``face_recognition_models`` package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("face embeddings need the face_recognition_models package: "
                           "pip install face_recognition_models==0.3.0")
    return Path(list(spec.submodule_search_locations)[0]) / "models" / DESCRIPTOR_FILE


class FaceEmbedder:
    """dlib's ResNet face descriptor over batches of aligned chips; load once, call many times (in-process or
    in the models' Ray actor).

    Args:
        weights: the ``dlib_face_recognition_resnet_model_v1.dat`` file; None takes the packaged one.
    """

    def __init__(self, weights: str | os.PathLike | None = None) -> None:
        try:
            import dlib
        except ImportError as error:
            raise ImportError("face embeddings need dlib: pip install dlib-bin==20.0.1") from error
        path = Path(weights) if weights is not None else default_weights()
        if not path.is_file():
            raise WeightsError(f"{path}: no such face descriptor weights file")
        try:
            self._network = dlib.face_recognition_model_v1(str(path))
        except RuntimeError as error:
            raise WeightsError(f"{path}: not a dlib face descriptor model ({error})") from error
        self.model_id = f"dlib-resnet-v1@{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"

    def __call__(self, chips: np.ndarray) -> np.ndarray:
        """(n, 128) float32 descriptors of (n, 150, 150, 3) uint8 RGB chips from ``face_chips``."""
        chips = np.asarray(chips)
        if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3) or chips.dtype != np.uint8:
            raise ValueError(f"chips must be an (n, {CHIP_SIZE}, {CHIP_SIZE}, 3) uint8 batch, "
                             f"but got shape {chips.shape} {chips.dtype}")
        if len(chips) == 0:
            return np.zeros((0, EMBEDDING_SIZE), np.float32)
        descriptors = self._network.compute_face_descriptor([np.ascontiguousarray(chip) for chip in chips])
        return np.array(descriptors, np.float32).reshape(len(chips), EMBEDDING_SIZE)
