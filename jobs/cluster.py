"""Connecting to Ray: an embedded local cluster by default, an existing one with ``--address``.

Which Ray a process uses: the cluster ``address`` names (``--address``), else the one ``RAY_ADDRESS``
names, else its own embedded Ray, whatever else runs on the machine: a cluster a user started with
``ray start`` (which Ray records in its temp dir, where a bare ``ray.init()`` would find and join it)
is never joined unless named. Joining passes no start-up option (object store size, system config):
a running cluster is used as its operator configured it.

The embedded cluster is lean unless asked otherwise: it starts neither the dashboard's API server nor
the autoscaler's monitor (a fixed one-machine cluster has nothing to scale), prestarts no idle
workers, and sizes its object store to the job. Measured here (2 cores): ``ray.init`` 1.6-2.6 s and
shutdown 0.1-1.1 s, against 3.0 s and 1.4 s with Ray's defaults; 77 + 50 + 2 x 46 MB of PSS left out.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

import ray

AUTH_MODE_ENV = "RAY_AUTH_MODE"
_LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray binds to loopback, as on a laptop
_TOKEN_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"
_reaper = None  # the watchdog of the embedded Ray; holding it keeps its pipe open


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


def connect(address: str | None = None, *, lean: bool = True, dashboard: bool = False,
            object_store_bytes: int | None = None, log_to_driver: bool = True) -> None:
    """Start or join Ray once per process (idempotent).

    Joins ``address``, else the cluster ``RAY_ADDRESS`` names, and uses it as its operator configured
    it; else starts the embedded Ray (see above), which listens on 127.0.0.1 only, keeps Ray's token
    authentication without its warning, and ends with this process, even when it is killed
    (``jobs.reaper``).

    Args:
        lean: the embedded cluster without the services a job on one machine does not use (see above);
            Ray Train wants Ray's defaults (its controller asks the state API).
        dashboard: start Ray's dashboard (http://127.0.0.1:8265) with the embedded cluster.
        object_store_bytes: the embedded cluster's object store (None: Ray's default, 30% of memory).
        log_to_driver: show what Ray's workers print (errors come back as exceptions either way).
    """
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        return _start_embedded(lean=lean and not dashboard, dashboard=dashboard, object_store_bytes=object_store_bytes,
                               log_to_driver=log_to_driver)
    if address != "auto":  # Ray itself looks for a token only for a cluster it finds ("auto")
        use_token_if_available()
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
             configure_logging=True, log_to_driver=log_to_driver)


def silence_worker_output() -> None:
    """From now on, show nothing of what Ray forwards to this driver: its workers' output and the errors
    it reports for them. A stopping job kills its actors while tasks still call them, and Ray reports
    each such call ("(raylet) Task ModelsActor.classify failed ... infinite retries remaining"): noise
    above the one line that says what was kept. Ray 2.60 has no public switch once ``ray.init`` ran;
    this is the flag its own debugger (``ray.util.rpdb``) sets, and Ray is pinned."""
    import ray._private.worker

    ray._private.worker._worker_logs_enabled = False


def show_worker_output() -> None:
    """Undo ``silence_worker_output``: for a Ray that goes on after the job that silenced it."""
    import ray._private.worker

    ray._private.worker._worker_logs_enabled = True


@contextlib.contextmanager
def _without_idle_services(enabled: bool) -> Iterator[None]:
    """While ``ray.init`` starts a head node: no autoscaler monitor, no dashboard API server.

    Ray 2.60 offers no ``ray.init`` argument for either (``ray start`` has ``--no-monitor``), so
    this sets the node's own parameters; Ray is pinned, and a test checks which processes run.
    """
    if not enabled:
        yield
        return
    from ray._private import node, parameter

    init, start_api_server = parameter.RayParams.__init__, node.Node.start_api_server

    def lean_init(params, *args, **kwargs) -> None:
        init(params, *args, **kwargs)
        params.no_monitor = True

    parameter.RayParams.__init__ = lean_init
    node.Node.start_api_server = lambda self, **kwargs: None
    try:
        yield
    finally:
        parameter.RayParams.__init__, node.Node.start_api_server = init, start_api_server


def _start_embedded(*, lean: bool, dashboard: bool, object_store_bytes: int | None, log_to_driver: bool) -> None:
    global _reaper
    from ray._private import ray_constants

    # Ray's single-machine mode (its default on macOS and Windows): every server binds to loopback.
    # Read from the environment by the processes ray.init starts, and from ray_constants here.
    saved = os.environ.get(_LOCAL_ONLY_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_LOCAL_ONLY_ENV], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    # Ray turns token authentication on for a new local cluster and warns about it on every run
    token_setup = logging.getLogger(_TOKEN_SETUP_LOGGER)
    token_setup_level = token_setup.level
    token_setup.setLevel(logging.ERROR)
    try:
        with _without_idle_services(lean):
            # "local": a new cluster, never one `ray start` recorded in Ray's temp dir
            ray.init(address="local", include_dashboard=dashboard, logging_level=logging.WARNING, configure_logging=True,
                     log_to_driver=log_to_driver, object_store_memory=object_store_bytes,
                     _system_config={"prestart_worker_first_driver": False} if lean else None)
    finally:
        token_setup.setLevel(token_setup_level)
        ray_constants.ENABLE_RAY_CLUSTER = saved[1]
        if saved[0] is None:
            os.environ.pop(_LOCAL_ONLY_ENV, None)
        else:
            os.environ[_LOCAL_ONLY_ENV] = saved[0]
    from jobs.reaper import start_reaper

    _reaper = start_reaper()
