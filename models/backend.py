"""Where a network's arithmetic runs: torch (GPUs, float16) or onnxruntime (CPUs), behind one call.

The networks handed to a runner already hold their pre- and post-processing (uint8 pixels in, final
numbers out), so an ONNX export carries them too and onnxruntime fuses them with the convolutions.
The export is made from the same torch weights on first use and cached under ``$EMORAY_HOME/onnx``,
keyed by the checkpoint file's sha256, beside a record of the export's own sha256 (a file that no
longer matches is exported again) and of what the model's user needs (labels, preprocessing...).
A process that finds the export cached on a machine without a GPU never imports torch: it starts
about a second sooner and holds ~180 MB less (241 against 419 MB RSS, both models loaded). Measured on the 2-core development machine (batch 8,
640x360): RetinaFace takes ~10-12 ms per frame in onnxruntime against ~15 ms in torch; the shipped
classifier ~2.6 ms per face against ~4.3 ms.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import numpy as np

from models import checkpoint, registry

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx")
OPSET = 17
EXPORT_VERSION = 3  # raise when a graph wrapper or the record changes, so caches are exported again
# a CUDA (or ROCm) GPU needs its driver, which shows here; without one "auto" means the CPU, known without torch
GPU_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg")  # dxg: WSL2
THREADS_VARIABLE = "EMORAY_NUM_THREADS"


def default_threads() -> int | None:
    """CPU threads for a model or a training worker that is not told how many: ``$EMORAY_NUM_THREADS``,
    or None (the engines' own defaults). onnxruntime ignores ``OMP_NUM_THREADS``, so this one setting is
    what reaches both engines (the tests' one-thread run sets it)."""
    text = os.environ.get(THREADS_VARIABLE, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{THREADS_VARIABLE} must be a whole number of threads of at least 1, but got {text!r}")
    return int(text)


def choose(device: str | None, backend: str) -> tuple[str, str]:
    """The device (``"cpu"``, ``"cuda:0"``...) and backend for the requested ones.

    ``auto`` backend: onnxruntime on a CPU, torch on a GPU; ONNX here runs on CPUs only (``auto`` device with
    ``onnx`` means the CPU).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, but got {backend!r}")
    requested = "auto" if device is None else str(device)
    if backend == "onnx" and requested not in ("auto", "cpu"):
        raise ValueError(f"backend 'onnx' runs on the CPU, but the device is {requested}; "
                         "use backend 'torch' on a GPU")
    if requested == "auto" and (backend == "onnx" or not any(os.path.exists(f) for f in GPU_DRIVER_FILES)):
        requested = "cpu"
    if requested != "cpu":
        from models.device import resolve_device

        resolved = resolve_device(requested)
        requested = "cpu" if resolved.type == "cpu" else str(resolved)
    return requested, backend if backend != "auto" else ("onnx" if requested == "cpu" else "torch")


class Runner(Protocol):
    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, ...]: ...


class TorchRunner:
    """Runs the module itself on its device (float16 on GPUs when ``half``)."""

    def __init__(self, module: torch.nn.Module, device: str, *, half: bool) -> None:
        import torch

        self.device = torch.device(device)
        self.module = module.eval().to(self.device, memory_format=torch.channels_last)
        if half:
            self.module.half()

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        import torch

        with warnings.catch_warnings():  # read-only arrays (e.g. from Ray's object store) are only read here
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            inputs = torch.as_tensor(batch).to(self.device)
        with torch.inference_mode():
            outputs = self.module(inputs)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return tuple(output.cpu().float().numpy() for output in outputs)  # float16 crosses to the CPU as it is: half the bytes


class OnnxRunner:
    """Runs an ONNX file in an onnxruntime CPU session (``num_threads`` intra-op threads; None: one per core)."""

    def __init__(self, path: Path, num_threads: int | None = None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads or 0
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        # idle threads sleep instead of spinning: spinning ones took the cores decoding and the other
        # model needed (measured here: 46 -> 73 frames/s for decode, detection and classification in one process)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(self.session.run(None, {self.input_name: np.ascontiguousarray(batch)}))


# What a model class gives ``open_network``: checkpoint -> (the graph to run, an example input), and
# checkpoint -> the metadata its user needs (JSON: kept in the export's record, so a cached export needs no checkpoint).
Build = Callable[[dict], "tuple[torch.nn.Module, torch.Tensor]"]
Describe = Callable[[dict], dict]


def open_network(weights: str | os.PathLike, role: str, *, device: str, backend: str, half: bool,
                 num_threads: int | None, build: Build, describe: Describe, output_names: Sequence[str],
                 dynamic: dict[int, str]) -> tuple[Runner, dict]:
    """A runner for ``weights`` (a registry name, a path or a URL) and its metadata: ``describe``'s dict plus
    ``model_id`` (``name@sha12+backend``: outputs made with other weights or another backend are never mixed).

    With onnxruntime and an export in the cache, the checkpoint is not even read. ``num_threads`` None
    means ``default_threads()``.
    """
    num_threads = num_threads or default_threads()
    path = registry.locate(weights, role)
    digest = registry.sha256_of(path)
    if backend == "onnx" and (cached := _cached_export(path, digest, role)):
        onnx_path, meta = cached
        return OnnxRunner(onnx_path, num_threads), meta
    payload = checkpoint.load(path, role)
    meta = describe(payload) | {"model_id": f"{payload.get('name') or path.stem}@{digest[:12]}+{backend}"}
    module, example = build(payload)
    if backend == "onnx":
        return OnnxRunner(export(module, example, _export_path(path, digest, role), meta=meta, output_names=output_names,
                                 dynamic=dynamic), num_threads), meta
    if num_threads:
        import torch

        torch.set_num_threads(num_threads)
    return TorchRunner(module, device, half=half), meta


def _export_path(checkpoint_path: Path, digest: str, role: str) -> Path:
    key = f"{role}-{digest}-v{EXPORT_VERSION}-opset{OPSET}"
    return registry.home() / "onnx" / f"{checkpoint_path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.onnx"


def _cached_export(checkpoint_path: Path, digest: str, role: str) -> tuple[Path, dict] | None:
    """The export of the checkpoint with sha256 ``digest`` and its metadata, when cached and intact."""
    path = _export_path(checkpoint_path, digest, role)
    record = path.with_suffix(".json")
    if not (path.is_file() and record.is_file()):
        return None
    try:
        saved = json.loads(record.read_text())
    except (OSError, ValueError):
        saved = {}
    if saved.get("sha256") and registry.sha256_of(path) == saved["sha256"] and isinstance(saved.get("meta"), dict):
        return path, saved["meta"]
    log.warning("%s: checksum does not match its record; exporting it again", path)
    return None


def export(module: torch.nn.Module, example: torch.Tensor, path: Path, *, meta: dict, output_names: Sequence[str],
           dynamic: dict[int, str]) -> Path:
    """Export ``module`` to ONNX at ``path``, with a record beside it (its sha256 and ``meta``); returns ``path``.

    ``dynamic``: input dimensions that vary, by index (e.g. ``{0: "batch"}``).
    """
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    record = path.with_suffix(".json")
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as scratch:
        temporary = Path(scratch) / path.name
        with warnings.catch_warnings():  # shape arithmetic traced as constants: only the batch size varies
            warnings.simplefilter("ignore")
            torch.onnx.export(module.float().cpu().eval(), (example,), str(temporary), dynamo=False,
                              opset_version=OPSET, input_names=["input"], output_names=list(output_names),
                              dynamic_axes={"input": dynamic})
        (Path(scratch) / record.name).write_text(json.dumps(
            {"sha256": registry.sha256_of(temporary), "meta": meta, "export_version": EXPORT_VERSION,
             "opset": OPSET, "torch": torch.__version__}, indent=1, default=_jsonable))
        os.replace(temporary, path)  # the model first: a record never points at a missing or older file
        os.replace(Path(scratch) / record.name, record)
    return path


def _jsonable(value: object) -> object:
    """A tensor or numpy value in a checkpoint's metrics, as JSON (lists and numbers)."""
    return value.tolist() if hasattr(value, "tolist") else str(value)
