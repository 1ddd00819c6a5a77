"""Training on Ray Train, resuming, checkpoints, evaluation, and the shipped model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from models import EmotionClassifier, registry
from models.datasets import FaceDataset, read_class_folders, read_dataset
from models.evaluate import evaluate
from models.train import TrainConfig, blended_targets, train, training_targets
from pipeline.cli import main
from tests.conftest import shared
from tests.tolerances import ece_tolerance, faces_apart

TWO_CLASSES = ("happy", "surprise")


@pytest.fixture(scope="module")
def own_faces(tmp_path_factory) -> Path:
    """A user's own labeled folder: 300 happy and 300 surprised faces from FER-2013 train, as PNG files."""
    root = tmp_path_factory.mktemp("own")
    for label in TWO_CLASSES:
        (root / label).mkdir()
        for path in sorted(shared(f"fer2013/train/{label}").glob("*.png"))[:300]:
            cv2.imwrite(str(root / label / path.name), cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
    return root


@pytest.fixture(scope="module")
def held_out() -> FaceDataset:
    """Happy and surprised faces no short run trains on: FER-2013 val's 414 surprised faces and its first 414
    happy ones. Balanced, so chance is 0.5; one face is 0.12 point (on the 60-face test split, 1.7)."""
    val = read_class_folders(shared("fer2013/val"))
    happy, surprise = (np.flatnonzero(val.targets == val.labels.index(label)) for label in TWO_CLASSES)
    return val.subset(np.concatenate([happy[:len(surprise)], surprise]))


@pytest.fixture(scope="module")
def short_run(local_ray, own_faces, tmp_path_factory) -> tuple[dict, Path, dict, list]:
    """8 epochs of vgg_face48 on the user's two classes: the splits, the checkpoint, its metrics, what was shown."""
    from models.datasets import stratified_split

    parts = stratified_split(read_dataset(own_faces)["all"], seed=0)
    output = tmp_path_factory.mktemp("short") / "own.pt"
    shown = []
    metrics = train(parts["train"], parts["val"], TrainConfig(epochs=8, batch_size=64, lr=0.05), output,
                    on_epoch=shown.append)
    return parts, output, metrics, shown


@pytest.mark.trains
def test_a_short_ray_train_run_beats_chance_and_round_trips(short_run, held_out):
    """Training is not bit-reproducible across machines or thread counts (the same seed gave 0.808 at two
    threads, 0.803 at one), so the bar sits well under what this run gave over seeds 0-4 at one and two
    threads on the 828 held-out faces: 0.772-0.867 (the 60-face test split: 0.767-0.867)."""
    parts, output, metrics, shown = short_run
    assert metrics["epochs_run"] == 8 and len(metrics["history"]) == 8
    assert shown == metrics["history"]  # the progress display saw every epoch, once, in order
    classifier = EmotionClassifier(output, device="cpu")
    assert evaluate(classifier, held_out)["accuracy"] > 0.7  # 60 faces under the worst of ten runs; chance: 0.5
    again = EmotionClassifier(output, device="cpu")
    faces = parts["test"].images
    np.testing.assert_array_equal(classifier(faces), again(faces))  # a checkpoint round trip is exact
    payload = torch.load(output, weights_only=True)
    assert payload["arch"] == "vgg_face48" and payload["preprocess"]["input_size"] == 48
    assert payload["metrics"]["train_data_sha256"] == parts["train"].fingerprint()
    on_val = evaluate(classifier, parts["val"])  # onnxruntime; the record was made in torch
    assert faces_apart(payload["metrics"]["val_accuracy"], on_val["accuracy"], len(parts["val"])) <= 1
    # calibrated on val: the stored temperature is the one the classifier applies, and its ECE is recorded
    assert payload["metrics"]["temperature"] == payload["temperature"] != 1.0
    assert payload["metrics"]["val_ece"] == pytest.approx(on_val["calibration"]["ece"],
                                                          abs=ece_tolerance(len(parts["val"])))


@pytest.mark.trains
def test_a_narrow_student_distilled_from_a_teacher_is_cheaper_and_still_right(short_run, own_faces, held_out,
                                                                              tmp_path):
    """The student's accuracy on the 828 held-out faces (chance: 0.5) was 0.669-0.848 over seeds 0-4 at one and
    two threads (seed 0: 0.669 and 0.688; the 60-face test split gave 0.633-0.833, and 0.6 on another machine)."""
    parts, teacher, _, _ = short_run
    student = tmp_path / "student.pt"
    result = CliRunner().invoke(main, ["train", "--data", str(own_faces), "--epochs", "8", "--batch-size", "64",
                                       "--widths", "8,16,32,64", "--teacher", str(teacher), "-o", str(student)])
    assert result.exit_code == 0, result.output
    payload = torch.load(student, weights_only=True)
    assert list(payload["arch_kwargs"]["widths"]) == [8, 16, 32, 64]
    config = payload["metrics"]["config"]
    assert list(config["teachers"]) == [str(teacher)] and config["teacher_weight"] == 0.5
    assert payload["metrics"]["teacher_ids"] == [registry.resolve(teacher, "emotion")[1]]
    parameters = [sum(v.numel() for v in torch.load(path, weights_only=True)["state_dict"].values())
                  for path in (teacher, student)]
    assert parameters[1] < parameters[0] / 10
    assert evaluate(EmotionClassifier(student, device="cpu"), held_out)["accuracy"] > 0.6  # 57 faces under the worst


@pytest.mark.trains
def test_a_student_is_taught_its_teachers_opinion_where_it_differs_from_the_label(short_run):
    parts, teacher, _, _ = short_run
    images = parts["train"]
    smoothed, _ = training_targets(images, TrainConfig())
    taught, _ = training_targets(images, TrainConfig(teachers=(str(teacher),), teacher_weight=0.5))
    teachers_part = (taught - 0.5 * smoothed) / 0.5
    np.testing.assert_allclose(teachers_part.sum(axis=1), 1.0, atol=1e-5)
    teacher_says = EmotionClassifier(teacher, device="cpu")(images.images).argmax(axis=1)
    wrong = teacher_says != images.targets
    assert wrong.any()  # an 8-epoch teacher errs on some training faces: there the two targets must differ
    assert (teachers_part.argmax(axis=1) == teacher_says).mean() > 0.98
    assert (teachers_part[wrong].argmax(axis=1) != images.targets[wrong]).mean() > 0.9  # ties may flip a few


def test_soft_targets_blend_into_the_smoothed_label():
    labels = np.array([0, 2, 1])
    smoothed = blended_targets(labels, 3, 0.1)
    logits = torch.randn(3, 3)
    assert float(F.cross_entropy(logits, torch.from_numpy(smoothed))) == pytest.approx(
        float(F.cross_entropy(logits, torch.from_numpy(labels), label_smoothing=0.1)), abs=1e-6)
    votes = np.array([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5], [0.0, 0.0, 1.0]], np.float32)
    blended = blended_targets(labels, 3, 0.1, [(votes, 0.3)])
    np.testing.assert_allclose(blended.sum(axis=1), 1.0, atol=1e-6)
    assert (blended.argmax(axis=1) == labels).all()  # at 0.3 the label still leads, the votes shape the rest
    assert blended[0, 1] > blended[0, 2]  # the annotators' second choice gets more than an unvoted class
    with pytest.raises(ValueError):
        blended_targets(labels, 3, 0.1, [(votes, 0.6), (votes, 0.6)])


@pytest.mark.trains
def test_resume_continues_from_the_saved_epoch(local_ray, own_faces, tmp_path):
    output = tmp_path / "resumed.pt"
    command = [sys.executable, "-m", "pipeline.cli", "train", "--data", str(own_faces), "--epochs", "3",
               "--batch-size", "64", "-o", str(output)]
    state = output.with_name(output.name + ".state.pt")
    ray_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    process = subprocess.Popen(command, env=os.environ | {"RAY_TMPDIR": ray_dir}, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            if state.exists() and torch.load(state, weights_only=True)["state"]["epoch"] >= 1:
                break
            time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    interrupted = torch.load(state, weights_only=True)["state"]
    assert 1 <= interrupted["epoch"] < 3 and not output.exists()
    result = CliRunner().invoke(main, ["train", "--data", str(own_faces), "--epochs", "3", "--batch-size", "64",
                                       "-o", str(output), "--resume"])
    assert result.exit_code == 0, result.output
    history = torch.load(output, weights_only=True)["metrics"]["history"]
    assert [h["epoch"] for h in history] == list(range(1, 4))
    assert history[:interrupted["epoch"]] == interrupted["history"]
    # the epochs after the resume are those of a run never interrupted: the random streams (shuffle,
    # augmentation, dropout) go on where they were instead of replaying the first epochs' draws
    straight = tmp_path / "straight.pt"
    result = CliRunner().invoke(main, ["train", "--data", str(own_faces), "--epochs", "3", "--batch-size", "64",
                                       "-o", str(straight)])
    assert result.exit_code == 0, result.output
    uninterrupted = torch.load(straight, weights_only=True)["metrics"]["history"]
    for resumed, reference in zip(history[interrupted["epoch"]:], uninterrupted[interrupted["epoch"]:]):
        assert resumed["loss"] == pytest.approx(reference["loss"], rel=1e-3)  # one machine: the same draws
        assert faces_apart(resumed["train_accuracy"], reference["train_accuracy"], 480) <= 2


@pytest.mark.trains
def test_fine_tuning_starts_from_another_checkpoint(local_ray, own_faces, tmp_path):
    output = tmp_path / "tuned.pt"
    result = CliRunner().invoke(main, ["train", "--data", str(own_faces), "--init", "mini-xception", "--epochs", "1",
                                       "--batch-size", "64", "-o", str(output), "--force-write"])
    assert result.exit_code == 0, result.output
    payload = torch.load(output, weights_only=True)
    assert payload["arch"] == "mini_xception" and payload["preprocess"]["input_size"] == 64


@pytest.fixture(scope="module")
def few_faces(tmp_path_factory) -> tuple[Path, object]:
    """A user's small labeled folder, 40 faces a class taken from FER-2013 val, and the rest of val."""
    root = tmp_path_factory.mktemp("few")
    val = read_class_folders(shared("fer2013/val"))
    taken = set()
    for label in val.labels:
        (root / label).mkdir()
        for name in sorted(val.names[val.targets == val.labels.index(label)])[:40]:
            (root / label / name).symlink_to(shared(f"fer2013/val/{label}/{name}"))
            taken.add(name)
    return root, val.subset(np.flatnonzero([name not in taken for name in val.names]))


@pytest.mark.trains
def test_fine_tuning_the_shipped_model_on_a_few_faces_does_not_make_it_worse(local_ray, few_faces, tmp_path):
    """Tuned minus start on the 3,299 faces was -0.0003 to +0.0003 over seeds 0-2 at one and two threads."""
    folder, rest = few_faces
    output = tmp_path / "tuned.pt"
    # --force-write: the best fine-tuned epoch is written even if it does not beat the start, the worst case
    result = CliRunner().invoke(main, ["train", "--data", str(folder), "--init", "emoray-vgg48-fer2013", "--epochs", "5",
                                       "-o", str(output), "--force-write"])
    assert result.exit_code == 0, result.output
    history = torch.load(output, weights_only=True)["metrics"]["history"]
    assert history[0]["epoch"] == 0 and history[0]["loss"] is None  # the start, measured first
    assert torch.load(output, weights_only=True)["metrics"]["best_epoch"] > 0
    assert (tmp_path / "tuned.pt.curve.png").stat().st_size > 1000
    start = evaluate(EmotionClassifier(device="cpu"), rest)["accuracy"]
    tuned = evaluate(EmotionClassifier(output, device="cpu"), rest)["accuracy"]
    assert tuned >= start - 0.01, (start, tuned)  # on the 3,299 val faces it never saw


@pytest.mark.trains
def test_a_fine_tune_that_cannot_help_keeps_the_start_and_says_so_quietly(few_faces, tmp_path):
    folder, _ = few_faces
    output = tmp_path / "bad.pt"
    command = [sys.executable, "-m", "pipeline.cli", "train", "--data", str(folder), "--init", "emoray-vgg48-fer2013",
               "--epochs", "1", "--lr", "2", "--freeze", "0", "-o", str(output)]
    env = os.environ | {"RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir="/tmp")}
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 1 and not output.exists()
    lines = [line for line in (finished.stdout + finished.stderr).splitlines() if line.strip()]
    assert lines[-1].startswith("emoray: no epoch beat the model fine-tuning started from"), lines
    assert "was not written (--force-write" in lines[-1]
    # emoray's table and its verdict, nothing of Ray Train's own (TrainingReport lines, controller warnings)
    assert all(line.startswith(("epoch ", "emoray: ")) for line in lines), lines


@pytest.fixture(scope="module")
def val_sample(tmp_path_factory) -> Path:
    """25 faces a class from FER-2013 val, in class folders."""
    root = tmp_path_factory.mktemp("val_sample")
    val = read_class_folders(shared("fer2013/val"))
    for label in val.labels:
        (root / label).mkdir()
        for name in val.names[val.targets == val.labels.index(label)][:25]:
            (root / label / name).symlink_to(shared(f"fer2013/val/{label}/{name}"))
    return root


def test_eval_prints_the_accuracy_of_a_direct_computation(val_sample, tmp_path):
    val = read_class_folders(val_sample)
    scores = EmotionClassifier("mini-xception", device="cpu")(val.images)
    direct = float((scores.argmax(1) == val.targets).mean())
    confidence, correct = scores.max(1), scores.argmax(1) == val.targets
    bins = np.minimum((np.ceil(confidence * 15) - 1).astype(int), 14)  # 15 right-closed bins of equal width
    direct_ece = sum(abs(correct[bins == b].mean() - confidence[bins == b].mean()) * (bins == b).mean()
                     for b in range(15) if (bins == b).any())
    result = CliRunner().invoke(main, ["eval", "--data", str(val_sample), "--model", "mini-xception",
                                       "--json", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["accuracy"] == pytest.approx(direct, abs=0.5 / len(val))  # the same faces right: a count over 175
    assert np.array(report["confusion_matrix"]).sum() == len(val) == 175
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 1000
    assert report["calibration"]["ece"] == pytest.approx(direct_ece, abs=1e-6)
    assert len(report["calibration"]["bins"]) == 15 and (tmp_path / "reliability.png").stat().st_size > 1000
    text = CliRunner().invoke(main, ["eval", "--data", str(val_sample), "--model", "mini-xception"]).output
    assert f"accuracy {direct:.4f}" in text and "confusion matrix" in text and f"ECE {direct_ece:.4f}" in text


def test_eval_against_the_ferplus_majority_votes(tmp_path):
    result = CliRunner().invoke(main, ["eval", "--data", str(shared("fer2013/val")), "--model", "mini-xception",
                                       "--labels", "ferplus", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    # val images whose FER+ raters agree on one of the seven labels (ties, contempt, unknown and not-a-face left out)
    assert report["labels_from"] == "ferplus" and 3000 < report["images"] < 3579
    votes = tmp_path / "votes.csv"
    votes.write_text("Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n")
    missing = CliRunner().invoke(main, ["eval", "--data", str(shared("fer2013/val")), "--labels", "ferplus",
                                        "--votes", str(votes)])
    assert missing.exit_code == 2 and "none of the images" in missing.output


def test_eval_through_the_detector_scores_the_faces_the_pipeline_way(val_sample):
    result = CliRunner().invoke(main, ["eval", "--data", str(val_sample), "--through-detector", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    through = report["through_detector"]
    assert through["found"] >= 0.95 and report["images"] == round(through["found"] * 175)
    assert report["accuracy"] == through["accuracy"] and through["gap"] == pytest.approx(
        through["direct_accuracy"] - through["accuracy"])
