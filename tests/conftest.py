"""Shared fixtures: the real data in ../shared/data and the real models, loaded once per session."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared(relative: str) -> Path:
    """Path of a file in ../shared/data; skips the test with the reason when it is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared data lives beside the project root in ../shared/data")
    return path


def read_rgb(relative: str) -> np.ndarray:
    """A shared photo as an (H, W, 3) uint8 RGB array."""
    return np.ascontiguousarray(cv2.imread(str(shared(relative)), cv2.IMREAD_COLOR)[..., ::-1])


@pytest.fixture(scope="session")
def detector():
    from models import FaceDetector

    return FaceDetector(device="cpu")


@pytest.fixture(scope="session")
def classifier():
    from models import EmotionClassifier

    return EmotionClassifier("mini-xception", device="cpu")


@pytest.fixture(scope="module")
def local_ray():
    """A real local Ray cluster of 2 CPUs for the tests of one module, with its own short temp dir."""
    import shutil
    import tempfile

    import ray

    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, _temp_dir=temp_dir)
    yield
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)
