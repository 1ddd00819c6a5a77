"""Faces drawn on a frame (OpenCV): box, emotion label and probability bars, for the annotated videos people watch.

Sizes follow the frame's shorter side, so the same drawing reads at 480x270 and at 1920x1080.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

EMOTION_COLORS: dict[str, tuple[int, int, int]] = {  # RGB, one per FER-2013 label
    "angry": (230, 40, 40),
    "disgust": (110, 170, 30),
    "fear": (160, 80, 210),
    "happy": (250, 205, 20),
    "sad": (40, 110, 235),
    "surprise": (250, 130, 30),
    "neutral": (175, 175, 175),
}
OTHER_COLOR = (255, 255, 255)  # a label outside the FER-2013 vocabulary

_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class _Style:
    """Pixel sizes for one frame size."""

    short_side: int
    font_scale: float
    text_thickness: int
    line_thickness: int
    pad: int

    @classmethod
    def for_frame(cls, height: int, width: int) -> "_Style":
        short_side = min(height, width)
        font_scale = max(0.45, short_side / 1080)  # 0.45 up to 486 p, 1.0 at 1080 p
        return cls(
            short_side=short_side,
            font_scale=font_scale,
            text_thickness=max(1, round(font_scale * 2)),
            line_thickness=max(2, round(short_side / 400)),
            pad=max(2, round(short_side / 180)),
        )


def _check(name: str, value: np.ndarray, shape: tuple[int | None, ...]) -> None:
    if value.ndim != len(shape) or any(want is not None and got != want for got, want in zip(value.shape, shape)):
        wanted = "(" + ", ".join("_" if want is None else str(want) for want in shape) + ")"
        raise ValueError(f"{name} must be an np.ndarray with shape {wanted}, but got shape {value.shape}")


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    red, green, blue = background
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 140 else (255, 255, 255)


def draw_faces(
    image: np.ndarray,
    xyxy: np.ndarray,
    probabilities: np.ndarray,
    labels: Sequence[str],
    track_ids: np.ndarray | None = None,
) -> np.ndarray:
    """Draw each face's box, its top emotion and a bar chart of all emotion probabilities.

    The label ("happy 0.87 #3") sits above the box, or inside it at the frame's top edge. The chart has one
    bar per label, marked with the label's first two letters, right of the box or left where it does not fit.

    Args:
        image: (H, W, 3) uint8 RGB frame; left unchanged.
        xyxy: (n, 4) box corners x1, y1, x2, y2 in pixels of ``image``.
        probabilities: (n, k) emotion probabilities, columns in the order of ``labels``.
        labels: the k emotion names; the FER-2013 ones get fixed colours.
        track_ids: (n,) track ids shown as "#id", or None when faces are not tracked; a negative id
            means that face has none.

    Returns:
        A drawn copy of ``image``.

    Raises:
        ValueError: when a shape or dtype does not fit.
    """
    if image.dtype != np.uint8:
        raise ValueError(f"image must be a uint8 np.ndarray, but got dtype {image.dtype}")
    _check("image", image, (None, None, 3))
    _check("xyxy", xyxy, (None, 4))
    _check("probabilities", probabilities, (len(xyxy), len(labels)))
    if track_ids is not None:
        _check("track_ids", track_ids, (len(xyxy),))
    canvas = image.copy()
    height, width = canvas.shape[:2]
    style = _Style.for_frame(height, width)
    boxes = np.round(np.nan_to_num(xyxy)).astype(np.int64)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height - 1)
    for face, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        if x2 <= x1 or y2 <= y1:  # entirely outside the frame
            continue
        best = int(np.argmax(probabilities[face]))
        color = EMOTION_COLORS.get(labels[best], OTHER_COLOR)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, style.line_thickness, cv2.LINE_AA)
        _draw_bars(canvas, probabilities[face], labels, (x1, y1, x2, y2), style)
        text = f"{labels[best]} {probabilities[face, best]:.2f}"
        if track_ids is not None and track_ids[face] >= 0:
            text += f" #{int(track_ids[face])}"
        _draw_label(canvas, text, (x1, y1), color, style)
    return canvas


def _draw_label(
    canvas: np.ndarray, text: str, corner: tuple[int, int], color: tuple[int, int, int], style: _Style
) -> None:
    """Text on a filled box above the face box, or just inside it when there is no room above."""
    height, width = canvas.shape[:2]
    (text_width, text_height), baseline = cv2.getTextSize(text, _FONT, style.font_scale, style.text_thickness)
    box_width, box_height = text_width + 2 * style.pad, text_height + baseline + style.pad
    x1, y1 = corner
    left = max(0, min(x1, width - box_width))
    top = y1 - box_height if y1 >= box_height else min(y1, max(0, height - box_height))
    cv2.rectangle(canvas, (left, top), (left + box_width, top + box_height), color, cv2.FILLED)
    cv2.putText(
        canvas, text, (left + style.pad, top + style.pad + text_height), _FONT, style.font_scale,
        _text_color(color), style.text_thickness, cv2.LINE_AA,
    )


def _draw_bars(
    canvas: np.ndarray, probabilities: np.ndarray, labels: Sequence[str], box: tuple[int, int, int, int],
    style: _Style,
) -> None:
    """One thin bar per emotion on a darkened panel beside the box: right of it, or left when no room."""
    height, width = canvas.shape[:2]
    x1, y1, x2, y2 = box
    min_row, max_row = max(5, round(style.short_side / 90)), max(6, round(style.short_side / 30))
    row = int(np.clip((y2 - y1) // len(labels), min_row, max_row))
    pad = max(1, row // 4)
    font_scale = cv2.getFontScaleFromHeight(_FONT, max(3, row - 2 * pad), 1)
    initials = [label[:2] for label in labels]
    initials_width = max(cv2.getTextSize(text, _FONT, font_scale, 1)[0][0] for text in initials)
    bar_length = int(np.clip((x2 - x1) // 2, 4 * row, 8 * row))
    panel_width, panel_height = initials_width + bar_length + 3 * pad, len(labels) * row + 2 * pad
    if panel_width > width or panel_height > height:
        return
    gap = style.line_thickness + 1
    left = x2 + gap if x2 + gap + panel_width <= width else x1 - gap - panel_width
    left = max(0, min(left, width - panel_width))
    top = max(0, min(y1, height - panel_height))
    panel = canvas[top : top + panel_height, left : left + panel_width]
    np.right_shift(panel, 1, out=panel)
    bar_left = left + 2 * pad + initials_width
    for position, (label, text, probability) in enumerate(zip(labels, initials, probabilities.tolist())):
        row_top = top + pad + position * row
        cv2.putText(canvas, text, (left + pad, row_top + row - pad), _FONT, font_scale, (255, 255, 255), 1, cv2.LINE_AA)
        length = round(float(np.clip(probability, 0.0, 1.0)) * bar_length)
        if length > 0:
            corners = (bar_left, row_top + pad), (bar_left + length - 1, row_top + row - pad - 1)
            cv2.rectangle(canvas, *corners, EMOTION_COLORS.get(label, OTHER_COLOR), cv2.FILLED)
