"""Connecting to Ray: an embedded local cluster by default, an existing one with ``--address``."""

from __future__ import annotations

import logging
import os

import ray


def connect(address: str | None = None) -> None:
    """Start or join Ray once per process (idempotent)."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
             configure_logging=True, log_to_driver=True)
