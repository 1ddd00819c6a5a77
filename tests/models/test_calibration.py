"""Temperature scaling: the fit finds how overconfident logits are, and the classifier's graph applies it."""

from __future__ import annotations

import numpy as np
import torch

from models import calibration
from models.checkpoint import Preprocess
from models.emotion.archs import build
from models.emotion.graph import ClassifierGraph


def test_the_fit_recovers_how_much_the_logits_were_sharpened():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.5, (1, 4000, 7))  # calibrated: each label drawn from its own softmax
    probabilities = calibration.probabilities(logits, 1.0)
    targets = np.array([rng.choice(7, p=p) for p in probabilities])
    assert abs(calibration.fit_temperature(logits, targets) - 1.0) <= 0.1
    assert abs(calibration.fit_temperature(logits * 2.5, targets) - 2.5) <= 0.25  # overconfident 2.5x
    assert abs(calibration.fit_temperature(logits * 0.6, targets) - 0.6) <= 0.1  # underconfident


def test_the_graph_divides_both_views_logits_by_the_temperature():
    torch.manual_seed(0)
    network = build("vgg_face48", num_classes=7, in_channels=1).eval()
    preprocess = Preprocess(input_size=48, channels=1, mean=0.5, std=0.25, mirror_average=True)
    crops = torch.randint(0, 256, (5, 48, 48), dtype=torch.uint8)
    plain, warm = ClassifierGraph(network, preprocess), ClassifierGraph(network, preprocess, temperature=2.0)
    with torch.inference_mode():
        logits = plain.logits(crops).numpy()
        assert logits.shape == (2, 5, 7)
        np.testing.assert_allclose(warm(crops).numpy(), calibration.probabilities(logits, 2.0), atol=1e-6)
        np.testing.assert_allclose(plain(crops).numpy(), calibration.probabilities(logits, 1.0), atol=1e-6)
        assert (warm(crops).max(dim=1).values < plain(crops).max(dim=1).values).all()  # softer
