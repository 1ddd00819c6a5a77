"""``FaceEmbedder``: who a face is, as dlib's 128-d ResNet face descriptor (99.38% on LFW), for telling persons apart.

Two faces of one person lie closer than about 0.6 (Euclidean) in this space, two people's farther.
The network wants a 150x150 RGB chip aligned as ``dlib.get_face_chip`` aligns it (eyes and nose at fixed
places, 25% padding). The chip is made here from RetinaFace's own five landmarks (``face_chips``): a
similarity transform onto where those five points lie in dlib's chip (``CHIP_LANDMARKS``). Measured on the
shared clips against dlib's way (its 5-point shape predictor run on the box, then ``get_face_chip``): the
same person-separation or better, no 9 MB shape model, and ~1.2-4 ms a face less.

The weights are dlib's own file, shipped in the ``face_recognition_models`` package from the package index
(CC0): nothing is downloaded at run time. dlib itself is not needed: ``models.dlib_resnet`` reads the file
into the same network in torch, run by onnxruntime on CPUs (~5-7 ms a face against dlib's ~75 ms here,
descriptors equal to dlib's within 1e-6) or by torch on GPUs, like the other models (``models.backend``).
That package's ``__init__`` imports ``pkg_resources``, which recent setuptools no longer ship, so its folder
is found without importing it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from models.errors import WeightsError

if TYPE_CHECKING:
    import torch

CHIP_SIZE = 150  # the network's input side, pixels
EMBEDDING_SIZE = 128
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
ROLE = "embedding"  # in the ONNX export's cache key, beside the detector's and the classifiers'
GRAPH_VERSION = 1  # raise when models/dlib_resnet.py's graph changes, so cached exports are made again
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


def _network(path: Path) -> "torch.nn.Module":
    from models.dlib_resnet import DlibFaceResNet, read_layers

    try:
        return DlibFaceResNet(read_layers(path.read_bytes())).eval()
    except (ValueError, IndexError) as error:
        raise WeightsError(f"{path}: not a dlib face descriptor model ({error})") from error


class FaceEmbedder:
    """dlib's ResNet face descriptor over batches of aligned chips; load once, call many times (in-process or
    in the models' Ray actor).

    Args:
        weights: dlib's ``dlib_face_recognition_resnet_model_v1.dat``; None takes the packaged one.
        device: ``"auto"`` (GPU when there is one), ``"cpu"`` or ``"cuda[:i]"``.
        half: float16 inference; None means on for CUDA, off for CPU.
        num_threads: CPU threads of this process for onnxruntime or torch (None: ``default_threads()``).
        backend: ``"auto"`` (onnxruntime on a CPU, torch on a GPU), ``"torch"`` or ``"onnx"``; part of ``model_id``.
    """

    def __init__(self, weights: str | os.PathLike | None = None, *, device: str = "auto", half: bool | None = None,
                 num_threads: int | None = None, backend: str = "auto") -> None:
        from models import backend as engines
        from models import registry

        path = Path(weights) if weights is not None else default_weights()
        if not path.is_file():
            raise WeightsError(f"{path}: no such face descriptor weights file")
        self.device, self.backend = engines.choose(device, backend)
        num_threads = num_threads or engines.default_threads()
        digest = registry.sha256_of(path)
        self.model_id = f"dlib-resnet-v1@{digest[:12]}+{self.backend}"
        if self.backend == "onnx":
            role = f"{ROLE}{GRAPH_VERSION}"
            cached = engines._cached_export(path, digest, role)
            onnx_path = cached[0] if cached else engines.export(
                _network(path), torch_example(), engines._export_path(path, digest, role),
                meta={"model_id": self.model_id}, output_names=("descriptors",), dynamic={0: "batch"})
            self._run = engines.OnnxRunner(onnx_path, num_threads)
        else:
            if num_threads:
                import torch

                torch.set_num_threads(num_threads)
            use_half = self.device.startswith("cuda") if half is None else bool(half)
            self._run = engines.TorchRunner(_network(path), self.device, half=use_half)

    def __call__(self, chips: np.ndarray) -> np.ndarray:
        """(n, 128) float32 descriptors of (n, 150, 150, 3) uint8 RGB chips from ``face_chips``."""
        chips = np.asarray(chips)
        if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3) or chips.dtype != np.uint8:
            raise ValueError(f"chips must be an (n, {CHIP_SIZE}, {CHIP_SIZE}, 3) uint8 batch, "
                             f"but got shape {chips.shape} {chips.dtype}")
        if len(chips) == 0:
            return np.zeros((0, EMBEDDING_SIZE), np.float32)
        (descriptors,) = self._run(chips)
        return descriptors.astype(np.float32, copy=False)


def torch_example() -> "torch.Tensor":
    """An input the network is traced with for the ONNX export: two black chips."""
    import torch

    return torch.zeros((2, CHIP_SIZE, CHIP_SIZE, 3), dtype=torch.uint8)
