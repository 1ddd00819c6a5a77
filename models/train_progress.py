"""What a training shows while it runs and leaves beside its checkpoint: each epoch's metrics as rank 0
saves them (for the driver's progress display) and the learning curve."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import torch


def watch_epochs(state_path: Path, on_epoch: Callable[[dict], None], stop: threading.Event, reported: int) -> None:
    """Call ``on_epoch`` with each new epoch's metrics as rank 0 saves its state (the driver's progress display)."""
    seen_mtime, stopping = None, False
    while not stopping:
        stopping = stop.wait(1.0)  # one last look after training ends, for the final epoch
        try:
            mtime = state_path.stat().st_mtime
            if mtime == seen_mtime:
                continue
            seen_mtime = mtime
            history = torch.load(state_path, map_location="cpu", weights_only=True)["state"]["history"]
        except (OSError, RuntimeError, KeyError, EOFError):
            continue  # not written yet, or being replaced
        for metrics in history[reported:]:
            on_epoch(metrics)
        reported = max(reported, len(history))


def learning_curve_png(history: list[dict], path: Path) -> None:
    """Train and val accuracy (one view) and train loss per epoch; epoch 0 is the start of a fine-tune."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    epochs = [h["epoch"] for h in history]
    figure, (top, bottom) = pyplot.subplots(2, 1, figsize=(6, 5), sharex=True)
    top.plot(epochs, [h["val_accuracy"] for h in history], "o-", label="val accuracy")
    trained = [h for h in history if h["train_accuracy"] is not None]
    top.plot([h["epoch"] for h in trained], [h["train_accuracy"] for h in trained], "s--", label="train accuracy")
    best = max(history, key=lambda h: h["val_accuracy"])
    top.axvline(best["epoch"], color="gray", linestyle=":", label=f"best: epoch {best['epoch']}")
    top.set(ylabel="accuracy (one view)")
    top.legend(loc="lower right")
    bottom.plot([h["epoch"] for h in trained], [h["loss"] for h in trained], "s-", color="#c44e52")
    bottom.set(xlabel="epoch", ylabel="train loss")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    pyplot.close(figure)
