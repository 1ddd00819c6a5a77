"""Training emotion CNNs on Ray Train (``TorchTrainer``): FER-2013 or a user's own labeled faces.

Each worker holds its shard of the (small) dataset in memory, augments whole batches in torch and
trains with mixed precision (float16 on GPU, bfloat16 on CPUs that support it). Rank 0 writes a
resumable state file every epoch; the best epoch by val accuracy is kept, and training stops early
when val accuracy has not improved for ``patience`` epochs. The result is an emoray emotion
checkpoint whose architecture, labels, preprocessing, data hash and metrics travel with the weights.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import numpy as np
import ray
import torch

from models import checkpoint, registry
from models.calibration import fit_temperature
from models.backend import default_threads
from models.errors import EmorayError
from models.datasets import FaceDataset, resize_images
from models.emotion.graph import checkpoint_logits
from models.train_config import TrainConfig
from models.train_progress import learning_curve_png, watch_epochs
from models.train_worker import train_loop

FINE_TUNE_LR = 0.002  # 1/25 of the from-scratch peak: small data should nudge the weights, not replace them
FINE_TUNE_FREEZE = 0.5  # the first half of the layers (edges, textures) stays as the start learned it


class NoImprovementError(EmorayError, RuntimeError):
    """Fine-tuning made no epoch better on val than the model it started from; nothing was written."""


def fine_tuning_start(init_from: str, config: TrainConfig) -> tuple[TrainConfig, dict]:
    """The architecture, input size and weights of emotion model ``init_from`` (a name or a path), to
    fine-tune from: ``config`` with that architecture, and the state dict to start from."""
    payload, _ = registry.resolve(init_from, "emotion")
    arch_kwargs = {name: value for name, value in payload["arch_kwargs"].items() if name != "num_classes"}
    config = replace(config, arch=payload["arch"], arch_kwargs=arch_kwargs,
                     input_size=payload["preprocess"]["input_size"],
                     normalize=(payload["preprocess"]["mean"], payload["preprocess"]["std"]))
    return config, payload["state_dict"]


def blended_targets(labels: np.ndarray, classes: int, smoothing: float,
                    soft: list[tuple[np.ndarray, float]] = ()) -> np.ndarray:
    """(n, classes) target distributions: each label smoothed, blended with each soft (n, classes) target by
    its weight (FER+ vote shares: the annotators' disagreement; a teacher's probabilities: distillation)."""
    targets = np.full((len(labels), classes), smoothing / classes, np.float32)
    targets[np.arange(len(labels)), labels] += 1.0 - smoothing
    if sum(weight for _, weight in soft) > 1:
        raise ValueError("the soft targets' weights add up to more than 1")
    blended = (1.0 - sum(weight for _, weight in soft)) * targets
    for distribution, weight in soft:
        blended += weight * distribution
    return blended.astype(np.float32)


DISTILL_TEMPERATURE = 2.0  # softens the teachers' probabilities so that their second choices teach too (Hinton et al.)


def teacher_probabilities(teachers: tuple[str, ...], images: np.ndarray,
                          labels: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """(n, classes) probabilities of ``teachers`` (emotion model names or paths) on uint8 faces (n, h, w), each
    teacher's views (image and mirror) and the teachers averaged, at ``DISTILL_TEMPERATURE``; and the teachers'
    model ids (a registry name changes with the weights it ships: the ids say which weights taught)."""
    from models.calibration import probabilities

    total = np.zeros((len(images), len(labels)), np.float32)
    model_ids = []
    for name in teachers:
        payload, model_id = registry.resolve(name, "emotion")
        model_ids.append(model_id)
        if tuple(payload["labels"]) != tuple(labels):
            raise EmorayError(f"teacher {name} predicts {payload['labels']}, not the training labels {labels}")
        faces = resize_images(images, payload["preprocess"]["input_size"])
        total += probabilities(checkpoint_logits(payload, faces), DISTILL_TEMPERATURE)
    return total / len(teachers), model_ids


def training_targets(train_set: FaceDataset, config: TrainConfig,
                     ferplus_targets: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """(n, classes) what each training image is taught: its smoothed label blended with the FER+ vote shares
    and the teachers' probabilities by their weights in ``config``; and the model ids of the teachers that taught."""
    soft = [(ferplus_targets, config.ferplus_weight)] if ferplus_targets is not None and config.ferplus_weight else []
    teacher_ids = []
    if config.teachers and config.teacher_weight:
        taught, teacher_ids = teacher_probabilities(config.teachers, train_set.images, train_set.labels)
        soft.append((taught, config.teacher_weight))
    return blended_targets(train_set.targets, len(train_set.labels), config.label_smoothing, soft), teacher_ids


def train(train_set: FaceDataset, val_set: FaceDataset, config: TrainConfig, output: str | Path, *,
          resume: bool = False, init_state: dict | None = None, ferplus_targets: np.ndarray | None = None,
          force_write: bool = False, command: str = "", on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train on ``train_set``, select on ``val_set``, write the emoray checkpoint to ``output`` and its
    learning curve beside it (``<output>.curve.png``).

    The resumable state lives beside the output (``<output>.state.pt``); ``resume`` continues from
    its last completed epoch. ``ferplus_targets`` (n, classes), FER+ vote shares, are blended into the
    labels by ``config.ferplus_weight``, and ``config.teachers``' probabilities by ``config.teacher_weight``.
    ``on_epoch`` gets each epoch's metrics (loss, train and val accuracy,
    best val accuracy, seconds) as training goes. Fine-tuning (``init_state``) measures the start first
    (epoch 0) and keeps the best epoch including it.

    Raises:
        NoImprovementError: fine-tuning made no epoch better than the start; nothing is written unless
            ``force_write``, which writes the best fine-tuned epoch.
    Returns:
        The metrics recorded in the checkpoint.
    """
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    config = replace(config, arch_kwargs=config.arch_kwargs | {"num_classes": len(train_set.labels), "in_channels": 1})
    output = Path(output).absolute()
    output.parent.mkdir(parents=True, exist_ok=True)
    state_path = output.with_name(output.name + ".state.pt")
    size = config.input_size
    resized = [resize_images(dataset.images, size) for dataset in (train_set, val_set)]
    taught, teacher_ids = training_targets(train_set, config, ferplus_targets)
    started = time.perf_counter()
    cpus = ray.cluster_resources().get("CPU", 1)
    worker_cpus = max(1.0, (cpus - 0.5) / config.num_workers)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "config": asdict(config), "state_path": str(state_path), "resume": resume, "init_state": init_state,
            "threads": default_threads() or max(1, math.ceil(worker_cpus)),
            "train_images": ray.put(resized[0]), "train_targets": ray.put(train_set.targets),
            "train_distributions": ray.put(taught),
            "val_images": ray.put(resized[1]), "val_targets": ray.put(val_set.targets),
        },
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu,
                                     resources_per_worker={"CPU": worker_cpus}),
        run_config=RunConfig(name=output.stem, storage_path=str(Path(tempfile.gettempdir()) / "emoray-train")),
    )
    _fit(trainer, state_path, on_epoch, resume)
    saved = torch.load(state_path, map_location="cpu", weights_only=True)["state"]
    history = saved["history"]
    weights, best = _chosen_weights(saved, output, fine_tuning=init_state is not None, force_write=force_write)
    payload = checkpoint.emotion_checkpoint(
        {k: v.half() if v.is_floating_point() else v for k, v in weights.items()},
        arch=config.arch, arch_kwargs=config.arch_kwargs,
        preprocess=checkpoint.Preprocess(input_size=size, channels=1, mean=config.normalize[0], std=config.normalize[1],
                                         margin_frac=config.margin_frac, mirror_average=True),
        labels=train_set.labels,
    )
    payload["name"] = output.stem
    payload["temperature"] = fit_temperature(checkpoint_logits(payload, resized[1]), val_set.targets)
    checkpoint.save(payload, output)
    # the recorded val metrics are those of the shipped weights, computed the way `emoray eval` does
    from models.classifier import EmotionClassifier
    from models.evaluate import evaluate

    val = evaluate(EmotionClassifier(output, device="cpu", backend="torch"), val_set)  # no ONNX export of a draft
    payload["metrics"] = {
        "val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"], "val_ece": val["calibration"]["ece"],
        "temperature": payload["temperature"],
        "epochs_run": saved["epoch"], "best_epoch": best["epoch"],
        "history": history, "train_seconds": time.perf_counter() - started,
        "train_data_sha256": train_set.fingerprint(), "val_data_sha256": val_set.fingerprint(),
        "train_images": len(train_set), "val_images": len(val_set), "config": asdict(config), "command": command,
        "teacher_ids": teacher_ids,
    }
    checkpoint.save(payload, output)
    learning_curve_png(history, output.with_name(output.name + ".curve.png"))
    return payload["metrics"]


def _fit(trainer, state_path: Path, on_epoch: Callable[[dict], None] | None, resume: bool) -> None:
    """Run the trainer; ``on_epoch`` gets each new epoch's metrics meanwhile (from a watcher thread)."""
    stop_watching = threading.Event()
    watcher = None
    if on_epoch is not None:
        done = len(torch.load(state_path, map_location="cpu", weights_only=True)["state"]["history"]) \
            if resume and state_path.exists() else 0
        watcher = threading.Thread(target=watch_epochs, args=(state_path, on_epoch, stop_watching, done), daemon=True)
        watcher.start()
    try:
        result = trainer.fit()
    finally:
        stop_watching.set()
        if watcher is not None:
            watcher.join()
    if result.error:
        raise result.error


def _chosen_weights(saved: dict, output: Path, *, fine_tuning: bool, force_write: bool) -> tuple[dict, dict]:
    """The weights to ship and their epoch's metrics: the best epoch's; when fine-tuning beat nothing, the
    best fine-tuned epoch's with ``force_write``, else NoImprovementError (the learning curve is written)."""
    history = saved["history"]
    best = max(history, key=lambda h: h["val_accuracy"])  # the first of equals: the start wins a tie
    if not fine_tuning or best["epoch"] != 0:
        return saved["best_state"], best
    learning_curve_png(history, output.with_name(output.name + ".curve.png"))
    tuned = max((h for h in history if h["epoch"] > 0), key=lambda h: h["val_accuracy"], default=None)
    message = (f"no epoch beat the model fine-tuning started from: val accuracy {best['val_accuracy']:.4f} at the "
               f"start, {tuned['val_accuracy'] if tuned else float('nan'):.4f} at best after (epoch "
               f"{tuned['epoch'] if tuned else '-'})")
    if not force_write or saved.get("best_tuned_state") is None:
        raise NoImprovementError(f"{message}; {output} was not written (--force-write writes the best "
                                 "fine-tuned epoch anyway)")
    return saved["best_tuned_state"], tuned
