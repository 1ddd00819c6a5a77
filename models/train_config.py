"""``TrainConfig``: what to train and how, recorded in the checkpoint; read by the driver and every worker."""

from __future__ import annotations

from dataclasses import dataclass, field

NORMALIZE_MEAN, NORMALIZE_STD = 0.5, 0.25


@dataclass(frozen=True)
class TrainConfig:
    """What to train and how; recorded in the checkpoint."""

    arch: str = "vgg_face48"
    arch_kwargs: dict = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    ferplus_weight: float = 0.0  # share of each image's target taken from its FER+ vote shares, not its label
    teachers: tuple[str, ...] = ()  # emotion models whose averaged probabilities the student learns (distillation)
    teacher_weight: float = 0.0  # share of each image's target taken from the teachers
    patience: int = 8
    seed: int = 0
    num_workers: int = 1
    use_gpu: bool = False
    input_size: int = 48
    margin_frac: float = 0.0  # crop margin around detector boxes on video: 0 came closest to FER-2013 framing on val
    freeze: float = 0.0  # share of the network's layers, from the input on, kept as they are (fine-tuning)
    normalize: tuple[float, float] = (NORMALIZE_MEAN, NORMALIZE_STD)  # a fine-tune keeps its start's
