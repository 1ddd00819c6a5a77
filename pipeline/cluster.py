"""Connecting to Ray: an embedded local cluster by default, an existing one with ``--address``."""

from __future__ import annotations

import logging
import os

import ray

AUTH_MODE_ENV = "RAY_AUTH_MODE"


def use_token_if_available() -> bool:
    """Turn on Ray token authentication in this process when a token is at hand.

    Ray 2.60 clusters require a token by default, but its clients only send one when
    ``RAY_AUTH_MODE=token`` is exported. This looks where Ray looks (``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``) and, when a token is there, sends it; a cluster
    without authentication ignores it. An explicit ``RAY_AUTH_MODE`` is respected as it is.

    Returns:
        Whether this process now authenticates with a token.
    """
    mode = os.environ.get(AUTH_MODE_ENV)
    if mode is not None:
        return mode.lower() == "token"
    from ray._raylet import AuthenticationTokenLoader, Config

    if not AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        return False
    os.environ[AUTH_MODE_ENV] = "token"  # inherited by the processes this one starts
    Config.initialize("")  # Ray reads the mode from its config, refreshed from the environment
    return True


def connect(address: str | None = None) -> None:
    """Start or join Ray once per process (idempotent)."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if address not in (None, "auto"):  # Ray itself looks for a token only for a local or "auto" cluster
        use_token_if_available()
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
             configure_logging=True, log_to_driver=True)
