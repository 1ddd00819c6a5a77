"""FER-2013 style datasets: the Kaggle CSV, class folders, FER+ votes, and seeded stratified splits.

Every reader returns a ``FaceDataset``: 48x48 (or any size) uint8 gray images with integer labels in
the order of ``labels``, plus each image's name so FER+ votes can be joined on it.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from models.errors import EmorayError

FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
CSV_SPLITS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# The FER-2013 label of each FER+ vote column (its columns contempt, unknown and NF have none)
_FERPLUS_TO_FER = {"anger": "angry", "disgust": "disgust", "fear": "fear", "happiness": "happy", "sadness": "sad",
                   "surprise": "surprise", "neutral": "neutral"}


class DatasetError(EmorayError, ValueError):
    """A dataset path or file is missing or malformed."""


@dataclass
class FaceDataset:
    """Images (n, h, w) uint8, labels (n,) int64 indexing ``labels``, and image names (n,)."""

    images: np.ndarray
    targets: np.ndarray
    names: np.ndarray
    labels: tuple[str, ...] = FER_LABELS

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, index: np.ndarray) -> "FaceDataset":
        return FaceDataset(self.images[index], self.targets[index], self.names[index], self.labels)

    def counts(self) -> dict[str, int]:
        return {label: int((self.targets == i).sum()) for i, label in enumerate(self.labels)}

    def fingerprint(self) -> str:
        """sha256 of the labels, names, targets and pixels: identifies exactly what a model saw."""
        digest = hashlib.sha256(" ".join(self.labels).encode())
        order = np.argsort(self.names, kind="stable")
        digest.update("\n".join(self.names[order]).encode())
        digest.update(np.ascontiguousarray(self.targets[order]).tobytes())
        digest.update(np.ascontiguousarray(self.images[order]).tobytes())
        return digest.hexdigest()


def read_kaggle_csv(path: str | Path) -> dict[str, FaceDataset]:
    """The original ``fer2013.csv`` (``emotion,pixels,Usage``): one dataset per split (train, val, test).

    Row ``i`` is named ``fer{i:07d}.png``, the FER+ naming, so votes join on it.
    """
    path = Path(path)
    rows: dict[str, list] = {}
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            if not {"emotion", "pixels"} <= set(reader.fieldnames or ()):
                raise DatasetError(f"{path}: expected columns emotion,pixels[,Usage], got {reader.fieldnames}")
            for number, row in enumerate(reader):
                pixels = np.array(row["pixels"].split(), dtype=np.uint8)
                side = int(round(len(pixels) ** 0.5))
                if side * side != len(pixels):
                    raise DatasetError(f"{path}: row {number} has {len(pixels)} pixels, not a square image")
                split = CSV_SPLITS.get(row.get("Usage") or "Training", "train")
                rows.setdefault(split, []).append((pixels.reshape(side, side), int(row["emotion"]), f"fer{number:07d}.png"))
    except OSError as error:
        raise DatasetError(f"{path}: cannot read ({error.strerror})") from error
    return {split: FaceDataset(np.stack([r[0] for r in items]), np.array([r[1] for r in items], np.int64),
                               np.array([r[2] for r in items])) for split, items in rows.items()}


def read_class_folders(root: str | Path, labels: tuple[str, ...] = FER_LABELS) -> FaceDataset:
    """``root/<class>/*.png|jpg``: images read as gray; class folders named by ``labels``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory of class folders")
    unknown = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in labels)
    if unknown:
        raise DatasetError(f"{root}: class folders {unknown} are not among the labels {list(labels)}")
    images, targets, names = [], [], []
    for target, label in enumerate(labels):
        for path in sorted((root / label).glob("*")) if (root / label).is_dir() else []:
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if image is None:
                raise DatasetError(f"{path}: not a readable image")
            images.append(image)
            targets.append(target)
            names.append(path.name)
    if not images:
        raise DatasetError(f"{root}: no images in class folders {list(labels)}")
    sizes = {image.shape for image in images}
    if len(sizes) > 1:  # a user's own photos: bring them to the most common size
        side = max(max(s) for s in sizes)
        images = resize_images(images, side)
    return FaceDataset(np.stack(images), np.array(targets, np.int64), np.array(names), tuple(labels))


def read_dataset(path: str | Path) -> dict[str, FaceDataset]:
    """A CSV file, a folder with split folders (train/val/test) of class folders, or one folder of class folders.

    One folder of class folders comes back as ``{"all": ...}`` for ``stratified_split``.
    """
    path = Path(path)
    if path.is_file():
        return read_kaggle_csv(path)
    splits = {name: path / name for name in ("train", "val", "test") if (path / name).is_dir()}
    if splits:
        return {name: read_class_folders(folder) for name, folder in splits.items()}
    return {"all": read_class_folders(path)}


def stratified_split(dataset: FaceDataset, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                     seed: int = 0) -> dict[str, FaceDataset]:
    """Seeded train/val/test split that keeps each class's proportion in every part."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for target in np.unique(dataset.targets):
        index = rng.permutation(np.flatnonzero(dataset.targets == target))
        n_val, n_test = round(len(index) * fractions[1]), round(len(index) * fractions[2])
        parts["val"].append(index[:n_val])
        parts["test"].append(index[n_val:n_val + n_test])
        parts["train"].append(index[n_val + n_test:])
    return {name: dataset.subset(np.sort(np.concatenate(chunks))) for name, chunks in parts.items()}


def training_splits(data: str | Path, *, val: str | Path | None = None, seed: int = 0) -> dict[str, FaceDataset]:
    """The ``train`` and ``val`` splits (and ``test`` if any) of ``emoray train --data``.

    A CSV or a folder of split folders gives its own splits; one folder of class folders is split
    80/10/10, stratified and seeded; ``val`` (class folders) replaces the validation split.
    """
    splits = read_dataset(data)
    if "all" in splits:
        splits = stratified_split(splits["all"], seed=seed)
    if val:
        splits["val"] = read_class_folders(val, splits["train"].labels)
    if "val" not in splits:
        raise DatasetError(f"{data}: no validation split found: give --val")
    return splits


def ferplus_votes_beside(data: str | Path) -> Path | None:
    """FER+'s vote file (``ferplus/fer2013new.csv``) in or beside the data folder ``data``, if there is one."""
    root = Path(data).resolve()
    return next((folder / "ferplus" / "fer2013new.csv" for folder in (root, root.parent)
                 if (folder / "ferplus" / "fer2013new.csv").is_file()), None)


def ferplus_soft_targets(dataset: FaceDataset, votes_csv: str | Path) -> np.ndarray:
    """(n, 7) FER+ vote shares per FER-2013 label, joined on image name; the image's own label where no vote."""
    votes: dict[str, np.ndarray] = {}
    try:
        with open(votes_csv, newline="") as handle:
            for row in csv.DictReader(handle):
                votes[row["Image name"]] = np.array(
                    [float(row[column] or 0) for column in _FERPLUS_TO_FER], np.float32)
    except (OSError, KeyError, ValueError) as error:
        raise DatasetError(f"{votes_csv}: not a readable FER+ vote file (fer2013new.csv): {error}") from error
    if not any(str(name) in votes for name in dataset.names):
        raise DatasetError(f"{votes_csv}: no votes for any of these images (FER+ names FER-2013's images "
                           "fer0000000.png ...)")
    order = [dataset.labels.index(_FERPLUS_TO_FER[column]) for column in _FERPLUS_TO_FER]
    soft = np.eye(len(dataset.labels), dtype=np.float32)[dataset.targets]
    for i, name in enumerate(dataset.names):
        counted = votes.get(str(name))
        if counted is not None and counted.sum() > 0:
            soft[i] = 0
            soft[i, order] = counted / counted.sum()
    return soft


FERPLUS_OTHER_VOTES = ("contempt", "unknown", "NF")  # FER+ columns that are none of the seven labels


def ferplus_majority_targets(dataset: FaceDataset, votes_csv: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """FER+ majority-vote labels of the images of ``dataset``, as (kept, targets in ``dataset.labels`` ids).

    An image is kept when FER+ rated it and its most voted column is one of the seven labels, alone at
    the top (ties, contempt, unknown and not-a-face are left out, as in FER+'s majority scheme).
    """
    columns = list(_FERPLUS_TO_FER) + list(FERPLUS_OTHER_VOTES)
    majority: dict[str, int] = {}
    try:
        with open(votes_csv, newline="") as handle:
            for row in csv.DictReader(handle):
                votes = np.array([float(row[column] or 0) for column in columns])
                top = np.flatnonzero(votes == votes.max())
                if votes.max() > 0 and len(top) == 1 and top[0] < len(_FERPLUS_TO_FER):
                    majority[row["Image name"]] = dataset.labels.index(_FERPLUS_TO_FER[columns[top[0]]])
    except (OSError, KeyError) as error:
        raise DatasetError(f"{votes_csv}: not a readable FER+ vote file (fer2013new.csv): {error}") from error
    kept = np.array([str(name) in majority for name in dataset.names], bool)
    return kept, np.array([majority[str(name)] for name in dataset.names[kept]], np.int64)


def resize_images(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """(n, size, size) uint8 images (area interpolation): a model's input size from FER's 48, or a user's photos
    of mixed sizes brought to one."""
    if isinstance(images, np.ndarray) and images.shape[1:] == (size, size):
        return images
    return np.stack([image if image.shape == (size, size) else
                     cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA) for image in images])
