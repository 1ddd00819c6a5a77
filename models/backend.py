"""Where a network's arithmetic runs: torch (GPUs, float16) or onnxruntime (CPUs), behind one call.

The networks handed to a runner already hold their pre- and post-processing (uint8 pixels in, final
numbers out), so an ONNX export carries them too and onnxruntime fuses them with the convolutions.
The export is made from the same torch weights on first use, cached under ``$EMORAY_HOME/onnx`` and
checksummed: a record beside each file holds its sha256, and a file that no longer matches is
exported again. Measured on the 2-core development machine (batch 8, 640x360): RetinaFace takes
~10-12 ms per frame in onnxruntime against ~15 ms in torch; the shipped classifier ~2.6 ms per face
against ~4.3 ms.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from models import registry

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx")
OPSET = 17
EXPORT_VERSION = 1  # raise when a graph wrapper changes, so caches are exported again


def resolve_backend(backend: str, device: torch.device) -> str:
    """``auto``: onnxruntime on a CPU, torch on a GPU. ONNX here runs on CPUs only."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, but got {backend!r}")
    if backend == "auto":
        return "onnx" if device.type == "cpu" else "torch"
    if backend == "onnx" and device.type != "cpu":
        raise ValueError(f"backend 'onnx' runs on the CPU, but the device is {device}; use backend 'torch' on a GPU")
    return backend


class TorchRunner:
    """Runs the module itself on its device (float16 on GPUs when ``half``)."""

    def __init__(self, module: torch.nn.Module, device: torch.device, *, half: bool) -> None:
        self.module = module.eval().to(device, memory_format=torch.channels_last)
        if half:
            self.module.half()

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.module(batch)
        return outputs if isinstance(outputs, tuple) else (outputs,)


class OnnxRunner:
    """Runs the module's ONNX export (cached for ``model_id``) in an onnxruntime CPU session.

    Args:
        module: the graph to export (float32, on the CPU).
        example: an input of the right dtype and rank; dimensions named in ``dynamic`` may vary.
        model_id: the weights' id (``name@sha``): the cache key, with ``variant``.
        variant: what else the graph depends on (e.g. a classifier's preprocessing).
        output_names: names of the graph's outputs, in order.
        dynamic: input dimensions that vary, by index (e.g. ``{0: "batch"}``).
        num_threads: onnxruntime intra-op threads (None: one per physical core).
    """

    def __init__(self, module: torch.nn.Module, example: torch.Tensor, *, model_id: str, variant: dict,
                 output_names: Sequence[str], dynamic: dict[int, str], num_threads: int | None = None) -> None:
        import onnxruntime

        path = exported(module, example, model_id=model_id, variant=variant, output_names=output_names,
                        dynamic=dynamic)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads or 0
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        # idle threads sleep instead of spinning: spinning ones took the cores decoding and the other
        # model needed (measured here: 46 -> 73 frames/s for decode, detection and classification in one process)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.session.run(None, {self.input_name: np.ascontiguousarray(batch.numpy())})
        return tuple(torch.from_numpy(output) for output in outputs)


def exported(module: torch.nn.Module, example: torch.Tensor, *, model_id: str, variant: dict,
             output_names: Sequence[str], dynamic: dict[int, str]) -> Path:
    """The cached ONNX export of ``module``, made now when absent or when its checksum fails."""
    key = json.dumps({"model_id": model_id, "variant": variant, "export": EXPORT_VERSION, "opset": OPSET},
                     sort_keys=True)
    name = model_id.replace("@", "-").replace("/", "_") + "-" + hashlib.sha256(key.encode()).hexdigest()[:12]
    path = registry.home() / "onnx" / f"{name}.onnx"
    record = path.with_suffix(".json")
    if path.is_file() and record.is_file():
        expected = json.loads(record.read_text()).get("sha256")
        if registry.sha256_of(path) == expected:
            return path
        log.warning("%s: checksum does not match its record; exporting it again from %s", path, model_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as scratch:
        temporary = Path(scratch) / path.name
        with warnings.catch_warnings():  # shape arithmetic traced as constants: only the batch size varies
            warnings.simplefilter("ignore")
            torch.onnx.export(module.float().cpu().eval(), (example,), str(temporary), dynamo=False,
                              opset_version=OPSET, input_names=["input"], output_names=list(output_names),
                              dynamic_axes={"input": dynamic})
        digest = registry.sha256_of(temporary)
        (Path(scratch) / record.name).write_text(json.dumps({"sha256": digest, "key": json.loads(key),
                                                             "torch": torch.__version__}, indent=1))
        os.replace(temporary, path)  # the model first: a record never points at a missing or older file
        os.replace(Path(scratch) / record.name, record)
    return path
