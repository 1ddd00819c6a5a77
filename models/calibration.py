"""Temperature scaling: one number that softens (or sharpens) a classifier's probabilities so that its
confidence matches its accuracy (Guo et al., 2017). Fitted on val after training, stored in the checkpoint,
applied inside the classifier's graph. It leaves one view's winning class as it is (with the mirror pass,
a near tie between the two views may rarely turn)."""

from __future__ import annotations

import numpy as np

TEMPERATURES = np.round(np.arange(0.5, 3.0001, 0.01), 2)  # 1.0 included: fitting never makes val worse


def probabilities(view_logits: np.ndarray, temperature: float) -> np.ndarray:
    """(views, n, k) logits -> (n, k) probabilities: each view's softmax of logits / T, averaged over views
    (the image and its mirror), as the classifier's graph computes them."""
    scaled = view_logits / temperature
    scaled = scaled - scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return (exp / exp.sum(axis=-1, keepdims=True)).mean(axis=0)


def fit_temperature(view_logits: np.ndarray, targets: np.ndarray) -> float:
    """The temperature in ``TEMPERATURES`` with the least negative log-likelihood of ``targets`` (n,)."""
    rows = np.arange(len(targets))

    def nll(temperature: float) -> float:
        return float(-np.log(probabilities(view_logits, temperature)[rows, targets] + 1e-12).mean())

    return float(min(TEMPERATURES, key=nll))
