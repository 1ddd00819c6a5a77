"""Does the GPU give the CPU's answers? Run it by hand on a machine with a GPU (CI has none):

    .venv/bin/python tools/gpu_check.py [DATA_DIR]        (default ../shared/data)

The face step of the product (detector input 640 px, then each emotion model) runs on frames of the shared
clips twice: with the torch backend on CUDA (float16) and with onnxruntime on the CPU. Faces are matched by
their boxes; the check fails when a face is found by one side only (unless its score is within
SCORE_TOLERANCE of the threshold, where float16 may tip it either way) or when a matched face's numbers
differ by more than the tolerances below. Exit status: 0 when all agree, 1 when they do not, 0 with
"no GPU here" when there is no CUDA device (then nothing is checked).
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

# float16 on the GPU against float32 on the CPU: a box moves by a fraction of a detector pixel (about 2 frame
# pixels at most for 1080p frames seen at 640), a score or a probability by a few thousandths.
BOX_TOLERANCE_PX = 3.0  # pixels of the full frame, on every box coordinate
SCORE_TOLERANCE = 0.01  # detector score
PROBABILITY_TOLERANCE = 0.02  # every emotion probability
MATCH_IOU = 0.5  # a GPU face and a CPU face are the same face when their boxes overlap this much
CLIPS = ("WolfgangLanger_Pexels.mp4", "two_faces.mp4", "three_faces_walking.mp4", "single_face.mp4")
FRAMES = 48  # the first frames of every clip, every third one
EMOTION_MODELS = ("emoray-vgg48-fer2013", "mini-xception")


def main(data: Path) -> int:
    import torch

    if not torch.cuda.is_available():
        print(f"no GPU here (torch {torch.__version__} sees no CUDA device): nothing checked")
        return 0
    from jobs.spec import ModelOptions
    from pipeline.faces import FaceStep
    from pipeline.inference import LocalModels
    from pipeline.sources.file import iter_frames, probe

    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}")
    problems = []
    for emotion_model in EMOTION_MODELS:
        gpu_options = ModelOptions(device="cuda", backend="torch", emotion_model=emotion_model, persons="off")
        gpu, cpu = LocalModels(gpu_options), LocalModels(replace(gpu_options, device="cpu", backend="onnx"))
        try:
            print(f"{gpu.model_ids()} against {cpu.model_ids()}")
            for clip in CLIPS:
                path = data / "videos" / clip
                info = probe(path)
                frames = list(itertools.islice(iter_frames(path), 0, FRAMES, 3))
                ours, theirs = (FaceStep(models, info, det_size=gpu_options.det_size)(frames) for models in (gpu, cpu))
                found = compare(ours, theirs, gpu_options.score_threshold)
                print(f"  {clip}: {found['faces']} faces, only on one side {found['alone']}, max box diff "
                      f"{found['box']:.3f} px, score {found['score']:.4f}, probability {found['probability']:.4f}")
                problems += [f"{emotion_model}, {clip}: {problem}" for problem in found["problems"]]
        finally:
            gpu.close()
            cpu.close()
    for problem in problems:
        print("DIFFERS:", problem)
    print("GPU and CPU agree within the tolerances" if not problems else f"{len(problems)} differences")
    return 1 if problems else 0


def compare(ours, theirs, threshold: float) -> dict:
    """The largest differences between two ``FaceBatch``es of the same frames, and what is beyond tolerance."""
    from models.retinaface.nms import box_iou

    problems, alone, matched = [], 0, []
    for frame in np.union1d(ours.face_frame, theirs.face_frame):
        mine, other = np.flatnonzero(ours.face_frame == frame), np.flatnonzero(theirs.face_frame == frame)
        iou = box_iou(ours.xyxy[mine], theirs.xyxy[other]) if len(mine) and len(other) else np.zeros((len(mine), len(other)))
        pairs = [(i, int(iou[k].argmax())) for k, i in enumerate(mine) if len(other) and iou[k].max() >= MATCH_IOU]
        matched += [(i, other[j]) for i, j in pairs]
        lone = [(ours, i) for i in set(mine) - {i for i, _ in pairs}]
        lone += [(theirs, j) for j in set(other) - {other[j] for _, j in pairs}]
        for side, index in lone:
            alone += 1
            if abs(side.det_score[index] - threshold) > SCORE_TOLERANCE:
                problems.append(f"frame {frame}: a face (score {side.det_score[index]:.3f}) found on one side only")
    a, b = np.array([i for i, _ in matched], int), np.array([j for _, j in matched], int)
    box = float(np.abs(ours.xyxy[a] - theirs.xyxy[b]).max(initial=0))
    score = float(np.abs(ours.det_score[a] - theirs.det_score[b]).max(initial=0))
    probability = float(np.abs(ours.probabilities[a] - theirs.probabilities[b]).max(initial=0))
    for name, value, tolerance in (("box", box, BOX_TOLERANCE_PX), ("score", score, SCORE_TOLERANCE),
                                   ("probability", probability, PROBABILITY_TOLERANCE)):
        if value > tolerance:
            problems.append(f"{name} differs by {value:.4f} (tolerance {tolerance})")
    return {"faces": len(matched), "alone": alone, "box": box, "score": score, "probability": probability,
            "problems": problems}


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "../shared/data")))
