"""The job's entrypoint on the cluster: check emoray's dependencies, then run ``pipeline.cli``.

Ray's job supervisor runs ``python -m jobs.entrypoint run ARGS`` with the head node's ``python``.
When that interpreter lacks emoray's dependencies, ``pipeline.cli`` would die on its first import
with a bare traceback (``No module named 'cv2'``); this says in one line which interpreter lacks
what, and how to fix it. It imports only the standard library, so it runs on any interpreter.
"""

from __future__ import annotations

import importlib.util
import runpy
import shlex
import sys

# module -> the distribution that provides it: pyproject.toml's dependencies (a test keeps them in step)
REQUIRED = {
    "torch": "torch",
    "numpy": "numpy",
    "cv2": "opencv-python-headless",
    "h5py": "h5py",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "click": "click",
    "av": "av",
    "pyarrow": "pyarrow",
    "duckdb": "duckdb",
    "rich": "rich",
    "psutil": "psutil",
    "trackers": "trackers",
    "supervision": "supervision",
    "matplotlib": "matplotlib",
    "ray": "ray[data,train,default]",
    "face_recognition_models": "face_recognition_models",
}
EXIT_FAILED = 1


def missing_modules() -> dict[str, str]:
    """The required modules this interpreter cannot find, with their distributions (found, not imported: cheap)."""
    return {module: dist for module, dist in REQUIRED.items() if importlib.util.find_spec(module) is None}


def interpreter() -> str:
    """This interpreter's path, and the name it was invoked as when that differs (e.g. ``python`` on PATH)."""
    path = sys.executable or "python"
    invoked = (getattr(sys, "orig_argv", None) or [""])[0]  # Python 3.10+
    return f"{path} (invoked as {invoked})" if invoked and invoked != path else path


def explain(missing: dict[str, str]) -> str:
    """One line for the job's log: which interpreter lacks which modules, and the two ways out."""
    install = " ".join(shlex.quote(dist) for dist in missing.values())
    return (f"emoray: {interpreter()} lacks emoray's dependencies: no module {', '.join(missing)} "
            f"(pip install {install}); submit with `emoray submit --python PATH` naming an interpreter on the "
            f"head node that has them, or run the cluster from the image of infra/ (infra/Dockerfile)")


def main() -> None:
    """Exit 1 with :func:`explain` when a dependency is missing; else run ``pipeline.cli`` as ``-m`` would."""
    missing = missing_modules()
    if missing:
        print(explain(missing), file=sys.stderr)
        sys.exit(EXIT_FAILED)
    runpy.run_module("pipeline.cli", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
