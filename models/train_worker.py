"""One Ray Train worker of ``models.train``: its shard of the data in memory, whole batches augmented in torch,
mixed precision, DDP when there are several workers; rank 0 saves the resumable state every epoch."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models import checkpoint
from models.augment import augment
from models.emotion.archs import build
from models.train_config import TrainConfig


def _normalize(images: torch.Tensor, normalize: tuple[float, float]) -> torch.Tensor:
    mean, std = normalize
    return (images.float() / 255.0 - mean) / std


def _autocast(device: torch.device) -> torch.autocast:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=torch.ops.mkldnn._is_mkldnn_bf16_supported())


def predict(model: torch.nn.Module, images: np.ndarray, device: torch.device, normalize: tuple[float, float],
            batch_size: int = 512) -> np.ndarray:
    """Class probabilities (n, k) of uint8 images (n, h, w) already at the model's input size."""
    model.eval()
    outputs = []
    with torch.inference_mode(), _autocast(device):
        for start in range(0, len(images), batch_size):
            batch = _normalize(torch.from_numpy(images[start:start + batch_size])[:, None].to(device), normalize)
            outputs.append(model(batch.contiguous(memory_format=torch.channels_last)).float().softmax(-1).cpu())
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, 0), np.float32)


def train_loop(loop_config: dict) -> None:
    """One Ray Train worker: its shard of the data, DDP when there are several workers."""
    import ray.train
    import ray.train.torch

    config = TrainConfig(**loop_config["config"])
    torch.set_num_threads(loop_config["threads"])  # Ray sets OMP_NUM_THREADS to the whole CPUs it granted
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(config.seed + rank)
    images, targets = ray.get(loop_config["train_images"]), ray.get(loop_config["train_targets"])
    distributions = ray.get(loop_config["train_distributions"])
    val_images, val_targets = ray.get(loop_config["val_images"]), ray.get(loop_config["val_targets"])
    shard = np.arange(rank, len(targets), world)
    model = build(config.arch, **config.arch_kwargs)
    if loop_config.get("init_state"):  # fine-tuning: every tensor whose shape fits (a new head starts fresh)
        own = model.state_dict()
        model.load_state_dict({k: v for k, v in loop_config["init_state"].items()
                               if k in own and own[k].shape == v.shape}, strict=False)
    model = model.to(device, memory_format=torch.channels_last)
    state_path = Path(loop_config["state_path"])
    saved = (torch.load(state_path, map_location="cpu", weights_only=True)
             if loop_config["resume"] and state_path.exists() else None)
    freeze = saved["state"].get("freeze", config.freeze) if saved else config.freeze  # as the run began
    frozen = _freeze(model, freeze)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=config.lr, momentum=0.9,
                                nesterov=True, weight_decay=config.weight_decay)
    steps = math.ceil(len(shard) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, epochs=config.epochs, steps_per_epoch=steps,
                                                   pct_start=0.15)
    state = {"epoch": 0, "best_accuracy": -1.0, "best_state": None, "best_tuned_accuracy": -1.0,
             "best_tuned_state": None, "stale": 0, "history": [], "freeze": freeze}
    if saved:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        state |= saved["state"]  # a state from an older emoray lacks the newer keys
    elif loop_config.get("init_state"):  # epoch 0: the start, measured the way every epoch is, and the one to beat
        started = time.perf_counter()
        accuracy = float((predict(model, val_images, device, config.normalize).argmax(-1) == val_targets).mean())
        state.update(best_accuracy=accuracy, best_state=_copy(model))
        state["history"].append({"epoch": 0, "loss": None, "train_accuracy": None, "val_accuracy": accuracy,
                                 "best_val_accuracy": accuracy, "seconds": time.perf_counter() - started})
        if rank == 0:
            _save_state(state_path, model, optimizer, schedule, state)
    network = ray.train.torch.prepare_model(model) if world > 1 else model
    scaler = torch.amp.GradScaler(enabled=device.type == "cuda")
    generator = torch.Generator().manual_seed(config.seed * 1000 + rank)
    if saved and "random" in saved:  # a resumed run draws what it would have drawn: no replay of its first epochs
        generator.set_state(saved["random"]["generator"])
        torch.set_rng_state(saved["random"]["torch"])
    for epoch in range(state["epoch"], config.epochs):
        started = time.perf_counter()
        network.train()
        for module in frozen:  # frozen layers keep their BatchNorm statistics too
            module.eval()
        order = torch.from_numpy(shard)[torch.randperm(len(shard), generator=generator)]
        total_loss, seen, correct = _one_epoch(network, order, (images, targets, distributions), config, device,
                                               (optimizer, scaler, schedule), generator)
        probabilities = predict(model, val_images, device, config.normalize)
        accuracy = float((probabilities.argmax(-1) == val_targets).mean())
        improved = accuracy > state["best_accuracy"]
        state.update(epoch=epoch + 1, stale=0 if improved else state["stale"] + 1)
        if improved:
            state.update(best_accuracy=accuracy, best_state=_copy(model))
        if accuracy > state["best_tuned_accuracy"]:  # for --force-write when no epoch beats the start
            state.update(best_tuned_accuracy=accuracy, best_tuned_state=state["best_state"] if improved else _copy(model))
        metrics = {"epoch": epoch + 1, "loss": total_loss / max(seen, 1), "train_accuracy": correct / max(seen, 1),
                   "val_accuracy": accuracy, "best_val_accuracy": state["best_accuracy"],
                   "seconds": time.perf_counter() - started}
        state["history"].append(metrics)
        if rank == 0:
            _save_state(state_path, model, optimizer, schedule, state, generator)
        ray.train.report(metrics)
        if state["stale"] >= config.patience:
            break


def _one_epoch(network: torch.nn.Module, order: torch.Tensor, data: tuple[np.ndarray, np.ndarray, np.ndarray],
               config: TrainConfig, device: torch.device, stepping: tuple, generator: torch.Generator
               ) -> tuple[float, int, int]:
    """One pass over ``order`` (indexes into images, targets, distributions), a step per batch; returns the
    summed loss, the images seen and how many of them were right."""
    images, targets, distributions = data
    optimizer, scaler, schedule = stepping
    total_loss, seen, correct = 0.0, 0, 0
    for start in range(0, len(order), config.batch_size):
        index = order[start:start + config.batch_size].numpy()
        batch = augment(_normalize(torch.from_numpy(images[index])[:, None].to(device), config.normalize), generator)
        labels = torch.from_numpy(targets[index]).to(device)
        with _autocast(device):
            logits = network(batch.contiguous(memory_format=torch.channels_last))
            loss = F.cross_entropy(logits.float(), torch.from_numpy(distributions[index]).to(device))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        total_loss += loss.item() * len(index)
        seen += len(index)
        correct += int((logits.argmax(-1) == labels).sum())
    return total_loss, seen, correct


def _copy(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _save_state(path: Path, model: torch.nn.Module, optimizer, schedule, state: dict,
                generator: torch.Generator | None = None) -> None:
    """Everything ``--resume`` needs, the random streams included: a resumed run that re-seeded them would
    shuffle, augment and drop out exactly as its first epochs did (measured: a run resumed at epoch 35 jumped
    from 0.77 to 0.82 train accuracy in one epoch while val fell, against 0.78 and rising uninterrupted)."""
    random = {"generator": generator.get_state(), "torch": torch.get_rng_state()} if generator is not None else None
    checkpoint.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                     "state": state, **({"random": random} if random else {})}, path)


def _freeze(model: torch.nn.Module, share: float) -> list[torch.nn.Module]:
    """Freeze the first ``share`` of the layers that hold weights, from the input on; returns them."""
    layers = [m for m in model.modules() if not list(m.children()) and list(m.parameters(recurse=False))]
    frozen = layers[:round(share * len(layers))]
    for layer in frozen:
        for parameter in layer.parameters():
            parameter.requires_grad_(False)
    return frozen
