"""How usable a face is for emotion recognition: its size, how far it is turned, how sharp it is.

Rough by design, from what the face step already has (the box, the five landmarks, the crop):

* ``face_px``: the side of the square crop window in pixels of the frame (margin included), i.e. how
  many frame pixels the classifier's input was made from.
* ``yaw`` and ``pitch`` in degrees, from the landmarks with the roll (tilt of the eye line) taken out.
  A face turned by ``yaw`` moves its nose tip sideways by about half the eye distance times ``tan(yaw)``
  (the nose sticks out by about half the eye distance), and by ``pitch`` up or down between the eye and
  mouth lines; the frontal reference is ArcFace's five-point template (nose 0.495 of the way from the
  eyes to the mouth). Positive yaw: the nose points to the image's right; positive pitch: up.
* ``sharpness``: the variance of the Laplacian of the gray crop the classifier sees (at its input size,
  so comparable across face sizes); blur lowers it.
"""

from __future__ import annotations

import cv2
import numpy as np

from models.checkpoint import Preprocess
from models.emotion.crop import square_boxes

FRONTAL_NOSE_DEPTH = 0.495  # nose height between the eye line (0) and the mouth line (1), ArcFace template
NOSE_PROTRUSION = 0.5  # how far the nose tip sticks out, in eye distances (yaw) and eye-to-mouth distances (pitch)


def face_px(xyxy: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    """(n,) side of each face's square crop window in frame pixels."""
    windows = square_boxes(np.asarray(xyxy, np.float64), preprocess)
    return (windows[:, 2] - windows[:, 0]).astype(np.float32)


def head_pose(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(yaw, pitch) in degrees, (n,) each, of (n, 5, 2) landmarks: right eye, left eye, nose, right and left
    mouth corner (the subject's)."""
    landmarks = np.asarray(landmarks, np.float64)
    eyes, nose = (landmarks[:, 0] + landmarks[:, 1]) / 2, landmarks[:, 2]
    mouth = (landmarks[:, 3] + landmarks[:, 4]) / 2
    eye_line = landmarks[:, 1] - landmarks[:, 0]
    eye_distance = np.maximum(np.hypot(eye_line[:, 0], eye_line[:, 1]), 1e-6)
    across = eye_line / eye_distance[:, None]  # unit vector along the eye line; down is perpendicular to it
    down = np.stack([-across[:, 1], across[:, 0]], axis=1)
    sideways = np.einsum("ij,ij->i", nose - eyes, across)
    mouth_depth = np.maximum(np.einsum("ij,ij->i", mouth - eyes, down), 1e-6)
    nose_depth = np.einsum("ij,ij->i", nose - eyes, down) / mouth_depth
    yaw = np.degrees(np.arctan(sideways / (NOSE_PROTRUSION * eye_distance)))
    pitch = np.degrees(np.arctan((FRONTAL_NOSE_DEPTH - nose_depth) / NOSE_PROTRUSION))
    return yaw.astype(np.float32), pitch.astype(np.float32)


def sharpness(crops: np.ndarray) -> np.ndarray:
    """(n,) variance of the Laplacian of (n, s, s) gray or (n, s, s, 3) RGB uint8 crops."""
    values = np.empty(len(crops), np.float32)
    for i, crop in enumerate(crops):
        gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
        values[i] = cv2.Laplacian(gray, cv2.CV_32F).var()
    return values
