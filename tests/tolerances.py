"""How close a metric recomputed here must come to one recorded elsewhere (another CPU, thread count or backend
reorders float reductions, so probabilities move in their last digits).

Measured on FER-2013 val (3,579 faces) with the three emotion models, torch against onnxruntime, 1 and 2 threads,
batches of 64 and 512: probabilities moved by at most 1.6e-6 (torch against onnxruntime; one engine gave the same
bits at either thread count and batch size), the ECE by at most 2.3e-8. Some faces sit close to where a label or
a calibration bin changes: the nearest top-two tie is 3.8e-6 apart (emoray-small-fer2013), the nearest top
probability 3.5e-6 from a bin edge (mini-xception), and no model has more than one face within 1e-5 of either.
"""

from __future__ import annotations

PROBABILITY_SHIFT = 1e-5  # how far a probability may move: the largest shift measured, 1.6e-6, six times over


def faces_apart(accuracy: float, other: float, faces: int) -> int:
    """How many faces two accuracies over the same ``faces`` differ by; another CPU may flip one face's label."""
    return round(abs(accuracy - other) * faces)


def ece_tolerance(faces: int) -> float:
    """How far the expected calibration error over ``faces`` may move.

    While every face keeps its bin and its label, the ECE (bin shares times |accuracy - mean confidence|)
    moves by no more than the largest probability shift; one face that crosses a bin edge or flips its label
    moves it by at most 2 / ``faces`` more.
    """
    return PROBABILITY_SHIFT + 2 / faces
