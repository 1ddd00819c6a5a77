"""FER-2013 readers against the counts in ../shared/data/README.md, and the CSV against the PNGs."""

from __future__ import annotations

import numpy as np
import pytest

from models.datasets import (FER_LABELS, DatasetError, ferplus_soft_targets, read_class_folders, read_dataset,
                             read_kaggle_csv, stratified_split)
from tests.conftest import shared

README_COUNTS = {
    "train": {"angry": 3969, "disgust": 435, "fear": 4079, "happy": 7186, "sad": 4796, "surprise": 3161, "neutral": 4932},
    "val": {"angry": 466, "disgust": 56, "fear": 496, "happy": 891, "sad": 652, "surprise": 414, "neutral": 604},
}


@pytest.fixture(scope="module")
def fer():
    return read_dataset(shared("fer2013"))


def test_class_folder_counts_equal_the_documented_ones(fer):
    assert sorted(fer) == ["train", "val"]
    for split, counts in README_COUNTS.items():
        assert fer[split].counts() == counts
        assert fer[split].images.shape[1:] == (48, 48) and fer[split].images.dtype == np.uint8


def test_the_kaggle_csv_sample_has_the_pixels_and_labels_of_the_pngs(fer):
    splits = read_kaggle_csv(shared("fer2013/fer2013_sample.csv"))
    assert len(splits["train"]) + len(splits["val"]) == 1074
    first = splits["train"]  # its first row is row 0 of fer2013.csv: fer0000000.png
    png = {name: i for i, name in enumerate(fer["train"].names)}["fer0000000.png"]
    assert first.names[0] == "fer0000000.png" and np.array_equal(first.images[0], fer["train"].images[png])
    labels_by_pixels: dict[bytes, set[int]] = {}
    for split in ("train", "val"):
        for image, target in zip(fer[split].images, fer[split].targets):
            labels_by_pixels.setdefault(image.tobytes(), set()).add(int(target))
    matched = 0
    for split in ("train", "val"):
        for image, target in zip(splits[split].images, splits[split].targets):
            labels = labels_by_pixels.get(image.tobytes())
            if labels is not None:  # 177 rows of FER-2013 have no PNG (non-faces)
                assert int(target) in labels
                matched += 1
    assert matched > 1000


def test_stratified_split_is_seeded_disjoint_and_keeps_class_shares(fer):
    parts = stratified_split(fer["val"], seed=3)
    again = stratified_split(fer["val"], seed=3)
    assert all(np.array_equal(parts[k].names, again[k].names) for k in parts)
    names = [set(parts[k].names) for k in ("train", "val", "test")]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    assert sum(len(p) for p in parts.values()) == len(fer["val"])
    share = fer["val"].counts()["happy"] / len(fer["val"])
    assert abs(parts["test"].counts()["happy"] / len(parts["test"]) - share) < 0.01


def test_ferplus_votes_join_on_the_image_name(fer):
    soft = ferplus_soft_targets(fer["val"], shared("fer2013/ferplus/fer2013new.csv"))
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-5)
    agreement = (soft.argmax(axis=1) == fer["val"].targets).mean()
    assert 0.5 < agreement < 0.8  # the README: FER+ majority agrees with FER-2013 for about 63%


def test_ferplus_votes_for_none_of_the_images_are_a_clear_error(fer, tmp_path):
    votes = tmp_path / "votes.csv"
    votes.write_text("Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
                     "Training,someone_else.png,10,0,0,0,0,0,0,0,0,0\n")
    with pytest.raises(DatasetError, match="no votes for any of these images"):
        ferplus_soft_targets(fer["val"], votes)


def test_unknown_class_folders_are_a_clear_error(tmp_path):
    (tmp_path / "joy").mkdir()
    with pytest.raises(DatasetError, match=r"class folders \['joy'\] are not among the labels"):
        read_class_folders(tmp_path)
    assert FER_LABELS[3] == "happy"
