"""Evaluating an emotion classifier on labeled faces: accuracy, macro-F1, per-class scores, confusion matrix,
and calibration (expected calibration error over equal-width confidence bins, a reliability diagram)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from models.classifier import EmotionClassifier
from models.datasets import FaceDataset

CALIBRATION_BINS = 15
# --through-detector: FER-2013 faces made into frames the way the pipeline would see them
UPSCALE, PAD_PX, DETECTOR_BATCH = 4, 96, 32


def tta_probabilities(classifier: EmotionClassifier, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Test-time augmentation: the mean of the original, its mirror, and four 2-pixel shifted crops of each."""
    views = [images, images[:, :, ::-1]]
    height, width = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)), mode="edge")
    views += [padded[:, 2 + dy:2 + dy + height, 2 + dx:2 + dx + width] for dy, dx in ((-2, 0), (2, 0), (0, -2), (0, 2))]
    return np.mean([probabilities(classifier, np.ascontiguousarray(view), batch_size) for view in views], axis=0)


def probabilities(classifier: EmotionClassifier, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class probabilities of whole face images (n, h, w), in batches."""
    if len(images) == 0:
        return np.zeros((0, len(classifier.labels)), np.float32)
    return np.concatenate([classifier(images[start:start + batch_size]) for start in range(0, len(images), batch_size)])


def metrics(targets: np.ndarray, predicted: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix (rows: true, columns: predicted)."""
    k = len(labels)
    confusion = np.bincount(targets * k + predicted, minlength=k * k).reshape(k, k)
    true_positive = np.diag(confusion).astype(float)
    precision = np.divide(true_positive, confusion.sum(axis=0), out=np.zeros(k), where=confusion.sum(axis=0) > 0)
    recall = np.divide(true_positive, confusion.sum(axis=1), out=np.zeros(k), where=confusion.sum(axis=1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    return {
        "images": int(len(targets)),
        "accuracy": float((targets == predicted).mean()) if len(targets) else 0.0,
        "macro_f1": float(f1.mean()),
        "per_class": {label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for label, p, r, f, s in zip(labels, precision, recall, f1, confusion.sum(axis=1))},
        "labels": list(labels),
        "confusion_matrix": confusion.tolist(),
    }


def calibration(scores: np.ndarray, targets: np.ndarray, bins: int = CALIBRATION_BINS) -> dict:
    """Expected calibration error: over ``bins`` equal-width bins of the top probability (right-closed),
    the share of faces in each bin times the gap between its accuracy and its mean confidence."""
    confidence, correct = scores.max(axis=1), scores.argmax(axis=1) == targets
    index = np.clip(np.digitize(confidence, np.linspace(0, 1, bins + 1)[1:-1], right=True), 0, bins - 1)
    rows, error = [], 0.0
    for b in range(bins):
        mine = index == b
        count = int(mine.sum())
        accuracy = float(correct[mine].mean()) if count else None
        mean_confidence = float(confidence[mine].mean()) if count else None
        if count:
            error += count / len(scores) * abs(accuracy - mean_confidence)
        rows.append({"lower": b / bins, "upper": (b + 1) / bins, "count": count, "accuracy": accuracy,
                     "confidence": mean_confidence})
    return {"ece": float(error), "bins": rows}


def through_detector(images: np.ndarray, classifier: EmotionClassifier, detector) -> tuple[np.ndarray, np.ndarray]:
    """Each face as the pipeline sees one: upscaled ``UPSCALE`` times (bicubic), padded by ``PAD_PX``
    (replicated border), detected (``FaceDetector``, best face), cropped with ``classifier.crop``.

    Returns:
        Which images had a face found (n,) bool, and the crops of those.
    """
    found, crops = np.zeros(len(images), bool), []
    for start in range(0, len(images), DETECTOR_BATCH):
        frames = [cv2.copyMakeBorder(cv2.resize(image, None, fx=UPSCALE, fy=UPSCALE, interpolation=cv2.INTER_CUBIC),
                                     PAD_PX, PAD_PX, PAD_PX, PAD_PX, cv2.BORDER_REPLICATE)
                  for image in images[start:start + DETECTOR_BATCH]]
        for offset, (frame, faces) in enumerate(zip(frames, detector(frames))):
            if len(faces):
                found[start + offset] = True
                crops.append(classifier.crop(frame, faces.xyxy[:1]))
    size = classifier.preprocess.input_size
    return found, np.concatenate(crops) if crops else np.zeros((0, size, size), np.uint8)


def evaluate(classifier: EmotionClassifier, dataset: FaceDataset, *, tta: bool = False,
             targets: np.ndarray | None = None, detector=None) -> dict:
    """Metrics of ``classifier`` on ``dataset`` (labels mapped by name to the classifier's own order).

    Args:
        targets: other labels of the same images, in ``dataset.labels`` ids (e.g. FER+ majority votes).
        detector: a ``FaceDetector``: score the faces the pipeline's way (``through_detector``), on the
            faces it finds, beside the same faces given directly.
    """
    mapping = np.array([classifier.labels.index(label) for label in dataset.labels])
    targets = mapping[dataset.targets if targets is None else targets]
    scores = tta_probabilities(classifier, dataset.images) if tta else probabilities(classifier, dataset.images)
    extra = {}
    if detector is not None:
        found, crops = through_detector(dataset.images, classifier, detector)
        direct_accuracy = float((scores[found].argmax(axis=1) == targets[found]).mean()) if found.any() else 0.0
        scores = tta_probabilities(classifier, crops) if tta else probabilities(classifier, crops)
        targets = targets[found]
        through_accuracy = float((scores.argmax(axis=1) == targets).mean()) if len(targets) else 0.0
        extra = {"through_detector": {"found": float(found.mean()), "accuracy": through_accuracy,
                                      "direct_accuracy": direct_accuracy, "gap": direct_accuracy - through_accuracy,
                                      "upscale": UPSCALE, "pad_px": PAD_PX}}
    return (metrics(targets, scores.argmax(axis=1), classifier.labels)
            | {"calibration": calibration(scores, targets), "model": classifier.model_id, "tta": tta} | extra)


def confusion_png(result: dict, path: str | Path) -> None:
    """The confusion matrix as a heat map with counts and row-normalized shares (PNG)."""
    confusion = np.array(result["confusion_matrix"], float)
    labels = result["labels"]
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    cell, margin = 90, 110
    size = margin + cell * len(labels)
    image = np.full((size + 40, size + 20, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i, label in enumerate(labels):
        cv2.putText(image, label, (5, margin + i * cell + cell // 2 + 5), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(image, label[:7], (margin + i * cell + 8, margin - 15), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        for j in range(len(labels)):
            shade = int(255 - 200 * shares[i, j])
            top_left = (margin + j * cell, margin + i * cell)
            cv2.rectangle(image, top_left, (top_left[0] + cell - 2, top_left[1] + cell - 2), (255, shade, shade), -1)
            color = (255, 255, 255) if shares[i, j] > 0.5 else (0, 0, 0)
            cv2.putText(image, f"{int(confusion[i, j])}", (top_left[0] + 10, top_left[1] + 35), font, 0.55, color, 1, cv2.LINE_AA)
            cv2.putText(image, f"{shares[i, j]:.0%}", (top_left[0] + 10, top_left[1] + 65), font, 0.5, color, 1, cv2.LINE_AA)
    title = f"{result['model']}  accuracy {result['accuracy']:.3f}  macro-F1 {result['macro_f1']:.3f}  (rows: true)"
    cv2.putText(image, title, (5, size + 25), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), image[..., ::-1])


def reliability_png(result: dict, path: str | Path) -> None:
    """The reliability diagram: accuracy against confidence per bin (a calibrated model is on the diagonal),
    with the share of faces in each bin below."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    bins = result["calibration"]["bins"]
    width = bins[0]["upper"] - bins[0]["lower"]
    centers = [b["lower"] + width / 2 for b in bins]
    figure, (top, bottom) = pyplot.subplots(2, 1, figsize=(5, 6), sharex=True, height_ratios=(3, 1))
    top.bar(centers, [b["accuracy"] or 0 for b in bins], width=width * 0.9, color="#4c72b0", label="accuracy")
    top.plot([0, 1], [0, 1], "--", color="gray", label="calibrated")
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
            title=f"{result['model']}\nECE {result['calibration']['ece']:.4f} ({len(bins)} bins)")
    top.legend(loc="upper left")
    bottom.bar(centers, [b["count"] / max(result["images"], 1) for b in bins], width=width * 0.9, color="#999999")
    bottom.set(xlabel="confidence (top probability)", ylabel="share of faces")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def write_report(result: dict, directory: str | Path) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "eval.json").write_text(json.dumps(result, indent=2))
    confusion_png(result, directory / "confusion_matrix.png")
    reliability_png(result, directory / "reliability.png")


def format_text(result: dict) -> str:
    lines = [f"model {result['model']}  images {result['images']}  tta {result['tta']}  "
             f"labels {result.get('labels_from', 'fer2013')}",
             f"accuracy {result['accuracy']:.4f}   macro-F1 {result['macro_f1']:.4f}   "
             f"ECE {result['calibration']['ece']:.4f} ({len(result['calibration']['bins'])} bins)",
             *([f"through the detector: {t['found']:.1%} of the faces found; accuracy {t['accuracy']:.4f} on them "
                f"against {t['direct_accuracy']:.4f} given directly (gap {t['gap']:+.4f})"]
               if (t := result.get("through_detector")) else []), "",
             f"{'class':<10}{'precision':>10}{'recall':>8}{'f1':>8}{'support':>9}"]
    for label, row in result["per_class"].items():
        lines.append(f"{label:<10}{row['precision']:>10.3f}{row['recall']:>8.3f}{row['f1']:>8.3f}{row['support']:>9}")
    labels = result["labels"]
    lines += ["", "confusion matrix (rows: true, columns: predicted)", " " * 10 + "".join(f"{l[:7]:>9}" for l in labels)]
    for label, row in zip(labels, result["confusion_matrix"]):
        lines.append(f"{label:<10}" + "".join(f"{n:>9}" for n in row))
    return "\n".join(lines)
