"""GPU check of the torch backend (float16 on CUDA) against the onnxruntime CPU backend, run by hand on a
machine with a GPU (CI has none): python tools/gpu_check.py [PHOTOS_DIR]  (default ../shared/data/photos)."""

import sys
import time

import cv2
import numpy as np
import torch

from models import EmotionClassifier, FaceDetector
from models.backend import choose

print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0))
folder = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/photos"
photos = [np.ascontiguousarray(cv2.imread(f"{folder}/{n}")[..., ::-1]) for n in ("multi_face.jpg", "solvay_1927.png")]
gpu, cpu = FaceDetector(device="cuda"), FaceDetector(device="cpu", backend="onnx")
print("ids", gpu.model_id, gpu.half, gpu.backend, "|", cpu.model_id)
for photo, g, c in zip(photos, gpu(photos), cpu(photos)):
    print("faces gpu", len(g), "cpu", len(c), "max box diff px",
          float(np.abs(np.sort(g.xyxy, 0) - np.sort(c.xyxy, 0)).max()) if len(g) == len(c) else "count differs")
for name in ("emoray-vgg48-fer2013", "mini-xception"):
    cg, cc = EmotionClassifier(name, device="cuda"), EmotionClassifier(name, device="cpu", backend="onnx")
    found = cpu([photos[1]])[0]
    crops = cc.crop(photos[1], found.xyxy)
    pg, pc = cg(crops), cc(crops)
    print(name, cg.model_id, "crops", len(crops), "max prob diff", float(np.abs(pg - pc).max()),
          "argmax agree", float((pg.argmax(1) == pc.argmax(1)).mean()))
    big = np.resize(crops, (512, *crops.shape[1:]))
    cg(big); torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(20): cg(big)
    torch.cuda.synchronize(); print(name, "gpu faces/s at batch 512:", round(20 * 512 / (time.perf_counter() - t)))
frames = np.stack([cv2.resize(photos[0], (640, 360))] * 32)
gpu(frames); torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(20): gpu(frames)
torch.cuda.synchronize(); print("detector gpu fps at 640x360 batch 32:", round(20 * 32 / (time.perf_counter() - t)))
try:
    choose("cuda", "onnx"); print("onnx on cuda: NO ERROR (bug)")
except ValueError as e:
    print("onnx on cuda refused:", e)
