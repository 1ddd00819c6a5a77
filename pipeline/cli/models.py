"""``emoray models``, ``emoray train`` and ``emoray eval``: the weights, training and evaluating emotion models."""

from __future__ import annotations

import json
import sys

import click

from models import registry
from models.emotion import ARCHITECTURE_NAMES
from models.errors import EmorayError
from pipeline.cli.options import EXIT_FAILED, EXIT_OK, FiniteFloatRange, address_option, exits_on_error


@click.group()
def models() -> None:
    """List and fetch model weights.

    \b
    Examples:
      emoray models list
      emoray models fetch                 # every named model
      emoray models fetch mini-xception
    """


def _human_size(size: int | None) -> str:
    return "-" if size is None else f"{size / 1e6:.1f} MB"


def _record(metrics: dict) -> tuple[str, str]:
    """A shipped model's recorded FER-2013 val accuracy and ECE ("-" for the others)."""
    accuracy, ece = metrics.get("val_accuracy"), metrics.get("val_ece")
    return ("-" if accuracy is None else f"{100 * accuracy:.2f}%", "-" if ece is None else f"{ece:.3f}")


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models_list(as_json: bool) -> None:
    """Show the named models: role, source, pinned sha256, and whether they are cached."""
    rows = registry.list_entries()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = ("NAME", "ROLE", "SOURCE", "SHA256", "CACHED", "SIZE", "VAL ACC", "ECE")
    table = [header] + [
        (r["name"], r["role"], r["source"], r["sha256"][:16] + "…", "yes" if r["cached"] else "no", _human_size(r["size_bytes"]),
         *_record(r.get("metrics") or {}))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    click.echo(f"\ncache: {registry.home() / 'models'}")


@models.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Download and convert again even when cached.")
def models_fetch(names: tuple[str, ...], force: bool) -> None:
    """Download, verify (sha256) and convert weights into the cache; all named models by default."""
    unknown = [name for name in names if name not in registry.ENTRIES]
    if unknown:
        raise click.BadParameter(
            f"unknown model {', '.join(unknown)}; known: {', '.join(registry.ENTRIES)}", param_hint="NAMES"
        )
    failed = False
    for name in names or tuple(registry.ENTRIES):
        try:
            path = registry.fetch(registry.ENTRIES[name], force=force)
        except EmorayError as error:
            click.echo(f"{name}: FAILED: {error}", err=True)
            failed = True
            continue
        click.echo(f"{name}: {path} ({_human_size(path.stat().st_size)})")
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True), help="Kaggle fer2013.csv, a folder of split folders, or one folder of class folders.")
@click.option("--val", "val_path", type=click.Path(exists=True), default=None, help="Validation class folders (default: from --data).")
@click.option("--arch", type=click.Choice(ARCHITECTURE_NAMES),
              default="vgg_face48", show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Checkpoint to write (.pt).")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--lr", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="Peak learning rate (one-cycle: a warm-up over the first 15% of the steps, then down). "
                   "Default 0.05 from scratch, 0.002 with --init.")
@click.option("--patience", type=click.IntRange(min=1), default=8, show_default=True, help="Stop after this many epochs without a better val accuracy.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--num-workers", type=click.IntRange(min=1), default=1, show_default=True, help="Ray Train workers (data parallel).")
@click.option("--use-gpu", is_flag=True, help="One GPU per worker, float16 mixed precision.")
@click.option("--resume", is_flag=True, help="Continue from the last completed epoch of the same output.")
@click.option("--init", "init_from", default=None, help="Start from this emotion model (name or path): fine-tuning.")
@click.option("--freeze", type=FiniteFloatRange(0, 1), default=None,
              help="Share of the layers, from the input on, left as the start learned them. Default 0.5 with "
                   "--init (small data refines the later layers), 0 from scratch.")
@click.option("--force-write", is_flag=True,
              help="With --init: write the best fine-tuned epoch even when it is no better than the start.")
@click.option("--ferplus-weight", type=FiniteFloatRange(0, 1), default=0.0, show_default=True,
              help="FER-2013 data: blend each training image's FER+ vote shares into its target by this weight "
                   "(its label keeps the rest).")
@click.option("--votes", type=click.Path(exists=True, dir_okay=False), default=None,
              help="FER+ fer2013new.csv for --ferplus-weight (default: ferplus/fer2013new.csv beside --data).")
@click.option("--teacher", "teachers", multiple=True,
              help="Distillation: an emotion model (name or path) whose probabilities the new model learns; "
                   "repeat it for an ensemble of teachers, averaged.")
@click.option("--teacher-weight", type=FiniteFloatRange(0, 1), default=0.5, show_default=True,
              help="With --teacher: the share of each image's target taken from the teachers.")
@click.option("--widths", default=None, metavar="W1,W2,...",
              help="Channels of each stage of --arch (vgg_face48: 32,64,128,256; mini_xception: 16,32,64,128): "
                   "narrower is cheaper per face.")
@click.option("-v", "--verbose", is_flag=True, help="Also show Ray Train's own messages.")
@address_option
@exits_on_error
def train(data, val_path, arch, epochs, output, batch_size, lr, patience, seed, num_workers, use_gpu, resume, init_from,
          freeze, force_write, ferplus_weight, votes, teachers, teacher_weight, widths, verbose, address):
    """Train an emotion CNN on FER-2013 or your own labeled faces, on Ray Train.

    Selection uses the validation split only; a single folder of class folders is split 80/10/10
    (stratified, seeded). Mixed precision: float16 on GPU, bfloat16 on CPUs that support it.

    Fine-tuning (--init) is safe by default: the starting model is measured on val first (epoch 0) and
    the best epoch is chosen including it, so the result is never worse on val than the start; when no
    epoch beats it, nothing is written (exit code 1) unless --force-write. Its defaults suit a few hundred
    faces: 1/25 of the from-scratch learning rate with a warm-up, the first half of the layers frozen.
    A learning curve is written beside the output (OUTPUT.curve.png).

    \b
    Examples:
      emoray train --data ../shared/data/fer2013 --epochs 30 -o emoray-fer.pt
      emoray train --data my_faces/ --init emoray-vgg48-fer2013 --epochs 10 -o my-model.pt
      emoray train --data fer2013.csv -o model.pt --resume
    Then: emoray eval --data ../shared/data/fer2013/val --model emoray-fer.pt
    """
    from jobs.cluster import connect
    from models.datasets import ferplus_soft_targets, ferplus_votes_beside, training_splits
    from models.train import FINE_TUNE_FREEZE, FINE_TUNE_LR, TrainConfig, fine_tuning_start
    from models.train import train as run_training

    splits = training_splits(data, val=val_path, seed=seed)
    tuning = init_from is not None
    config = TrainConfig(arch=arch, epochs=epochs, batch_size=batch_size, patience=patience, seed=seed,
                         num_workers=num_workers, use_gpu=use_gpu,
                         lr=lr if lr is not None else FINE_TUNE_LR if tuning else TrainConfig.lr,
                         freeze=freeze if freeze is not None else FINE_TUNE_FREEZE if tuning else 0.0,
                         ferplus_weight=ferplus_weight, teachers=teachers,
                         teacher_weight=teacher_weight if teachers else 0.0, arch_kwargs=_widths(widths))
    if tuning and widths:
        raise click.BadParameter("a fine-tune keeps the widths of the model it starts from", param_hint="--widths")
    if config.ferplus_weight + config.teacher_weight > 1:
        raise click.BadParameter("--ferplus-weight and --teacher-weight add up to more than 1", param_hint="--teacher-weight")
    ferplus_targets = None
    if ferplus_weight > 0:
        votes = votes or ferplus_votes_beside(data)
        if votes is None:
            raise click.BadParameter(f"no ferplus/fer2013new.csv in or beside {data}: give it with --votes",
                                     param_hint="--ferplus-weight")
        ferplus_targets = ferplus_soft_targets(splits["train"], votes)
    init_state = None
    if tuning:
        config, init_state = fine_tuning_start(init_from, config)
    # Ray Train's controller asks Ray's state API (no lean Ray); its workers' lines only with -v
    connect(address, lean=False, log_to_driver=verbose)

    def show(epoch: dict) -> None:
        if epoch["epoch"] == 0:
            click.echo(f"epoch   0/{config.epochs}  the start ({init_from})  val acc {epoch['val_accuracy']:.4f}", err=True)
            return
        click.echo(f"epoch {epoch['epoch']:>3}/{config.epochs}  loss {epoch['loss']:.4f}  "
                   f"train acc {epoch['train_accuracy']:.4f}  val acc {epoch['val_accuracy']:.4f}  "
                   f"best {epoch['best_val_accuracy']:.4f}  {epoch['seconds']:.0f} s", err=True)

    metrics = run_training(splits["train"], splits["val"], config, output, resume=resume, init_state=init_state,
                           ferplus_targets=ferplus_targets, force_write=force_write,
                           command=" ".join(["emoray", *sys.argv[1:]]), on_epoch=show)
    kept = "the start, unchanged" if metrics["best_epoch"] == 0 else f"epoch {metrics['best_epoch']}"
    click.echo(f"wrote {output}: val accuracy {metrics['val_accuracy']:.4f} mirror-averaged, as emoray eval and run "
               f"classify (the table's are one view), calibration error {metrics['val_ece']:.3f} at temperature "
               f"{metrics['temperature']:.2f}; best {kept} of {metrics['epochs_run']}, "
               f"{metrics['train_seconds'] / 60:.1f} min; learning curve {output}.curve.png")


def _widths(text: str | None) -> dict:
    """``--widths 24,48,96,192`` -> the architecture's ``widths`` argument."""
    if text is None:
        return {}
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise click.BadParameter(f"expected positive channel counts separated by commas, got {text!r}", param_hint="--widths")
    return {"widths": widths}


@click.command("eval")
@click.option("--data", required=True, type=click.Path(exists=True), help="Class folders (e.g. fer2013/val), a split folder, or a Kaggle CSV.")
@click.option("--model", default=registry.DEFAULT_EMOTION_MODEL, show_default=True, help="Emotion model: a name or a checkpoint path.")
@click.option("--split", default="val", show_default=True, help="Which split when --data holds several.")
@click.option("--tta", is_flag=True, help="Test-time augmentation: mirror and shifted crops, averaged.")
@click.option("--labels", "label_source", type=click.Choice(["fer2013", "ferplus"]), default="fer2013", show_default=True,
              help="The images' own labels, or FER+'s majority votes (images without a clear majority left out).")
@click.option("--votes", type=click.Path(exists=True, dir_okay=False), default=None,
              help="FER+ fer2013new.csv (default: ferplus/fer2013new.csv beside the data folder).")
@click.option("--through-detector", is_flag=True,
              help="Score the faces the pipeline's way: each upscaled 4x, padded, detected, cropped, classified.")
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
              help="Also write eval.json, confusion_matrix.png and reliability.png here.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@exits_on_error
def evaluate_command(data, model, split, tta, label_source, votes, through_detector, output, as_json):
    """Accuracy, macro-F1, per-class scores, the confusion matrix and the calibration of an emotion model.

    Calibration: the expected calibration error (ECE) over 15 equal-width confidence bins, and with -o a
    reliability diagram.

    \b
    Examples:
      emoray eval --data ../shared/data/fer2013/val --model mini-xception
      emoray eval --data ../shared/data/fer2013 --split val --model emoray-fer.pt --tta -o report/
      emoray eval --data ../shared/data/fer2013/val --labels ferplus
      emoray eval --data ../shared/data/fer2013/val --through-detector
    """
    import numpy as np

    from models import EmotionClassifier, FaceDetector
    from models.datasets import ferplus_majority_targets, ferplus_votes_beside, read_dataset
    from models.evaluate import evaluate, format_text, write_report

    splits = read_dataset(data)
    if len(splits) > 1 and split not in splits:
        raise click.BadParameter(f"no split {split!r} in {data} (has {sorted(splits)})", param_hint="--split")
    dataset = splits[split] if split in splits else next(iter(splits.values()))
    targets = None
    if label_source == "ferplus":
        votes = votes or ferplus_votes_beside(data)
        if votes is None:
            raise click.BadParameter(f"no ferplus/fer2013new.csv in or beside {data}: give it with --votes",
                                     param_hint="--labels")
        kept, targets = ferplus_majority_targets(dataset, votes)
        if not kept.any():
            raise click.BadParameter(f"none of the images of {data} has a FER+ majority vote in {votes}",
                                     param_hint="--labels")
        dataset = dataset.subset(np.flatnonzero(kept))
    detector = FaceDetector(device="cpu", det_size=None) if through_detector else None
    result = evaluate(EmotionClassifier(model, device="cpu"), dataset, tta=tta, targets=targets, detector=detector)
    result["labels_from"] = label_source
    if output:
        write_report(result, output)
    click.echo(json.dumps(result, indent=2) if as_json else format_text(result))
