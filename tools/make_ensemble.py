"""Make an ensemble emotion model of trained nets and record what it does, as the shipped models record it.

    python tools/make_ensemble.py MEMBER [MEMBER ...] -o models/weights/emoray-ensemble-fer2013.pt \
        [--data ../shared/data/fer2013] [--test-scales 0.95,1,1.05]

MEMBER: a registry name or a checkpoint path (``emoray train`` output), all of one input. The temperature is
fitted on ``--data``'s val split only, and recorded with val accuracy and ECE, FER+ majority-vote accuracy,
accuracy through the detector (the pipeline's way: faces found, cropped and classified) and the CPU cost per
face (onnxruntime, batch 64, median of 20 calls) beside the default's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import EmotionClassifier, FaceDetector, registry  # noqa: E402
from models.datasets import ferplus_majority_targets, read_class_folders  # noqa: E402
from models.ensemble import make_ensemble  # noqa: E402
from models.evaluate import evaluate  # noqa: E402
from models import checkpoint  # noqa: E402


def ms_per_face(model: str | Path, faces: np.ndarray) -> float:
    classifier = EmotionClassifier(model, device="cpu", backend="onnx")
    classifier(faces)
    times = []
    for _ in range(20):
        started = time.perf_counter()
        classifier(faces)
        times.append((time.perf_counter() - started) * 1000 / len(faces))
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("members", nargs="+")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/fer2013")
    parser.add_argument("--test-scales", default="1", help="zooms each face is also seen at, comma-separated")
    args = parser.parse_args()
    val = read_class_folders(args.data / "val")
    paths = [registry.locate(member, "emotion") if not Path(member).exists() else Path(member) for member in args.members]
    scales = tuple(float(scale) for scale in args.test_scales.split(","))
    metrics = make_ensemble(paths, val, args.output, test_scales=scales)
    ensemble = EmotionClassifier(args.output, device="cpu", backend="torch")
    kept, ferplus = ferplus_majority_targets(val, args.data / "ferplus" / "fer2013new.csv")
    metrics["val_ferplus_accuracy"] = evaluate(ensemble, val.subset(np.flatnonzero(kept)), targets=ferplus)["accuracy"]
    metrics["val_ferplus_images"] = int(kept.sum())
    through = evaluate(ensemble, val, detector=FaceDetector(device="cpu", det_size=None))["through_detector"]
    metrics["val_through_detector"] = through
    faces = val.images[:64]
    metrics["cpu_ms_per_face"] = ms_per_face(args.output, faces)
    metrics["default_cpu_ms_per_face"] = ms_per_face(registry.DEFAULT_EMOTION_MODEL, faces)
    payload = torch.load(args.output, map_location="cpu", weights_only=True)
    payload["metrics"] = metrics
    checkpoint.save(payload, args.output)
    print({key: value for key, value in metrics.items() if key != "members"})
    for member in metrics["members"]:
        print("member", member)
    return 0


if __name__ == "__main__":
    sys.exit(main())
