"""Running a job on a Ray cluster through the Ray Jobs API: submit, status, logs, stop.

A submitted job is ``emoray run`` itself, started by Ray's job supervisor on the head node with the
same options; the project's packages travel in the job's runtime environment (``py_modules``), so
the cluster needs emoray's dependencies (the container image in infra/) but not this checkout. The
driver on the cluster is what makes the job resumable and fault tolerant: Ray retries tasks and
restarts actors lost with a node, and resubmitting a stopped or failed job skips complete videos.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from jobs.storage import is_uri
from models.errors import EmorayError

DEFAULT_DASHBOARD = "http://127.0.0.1:8265"
PACKAGES = ("pipeline", "models", "jobs")
# left out of the upload: caches, build leftovers and training state (the Jobs API caps a package at 100 MB)
EXCLUDES = ["__pycache__", "*.pyc", "*.state.pt", "*.tmp"]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
EXIT_OK, EXIT_FAILED = 0, 1
_CHATTY_LOGGERS = ("ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk", "ray._private.runtime_env.packaging")


class ClusterError(EmorayError, ConnectionError):
    """The Ray Jobs API cannot be reached, refuses the request, or does not know the job."""


@dataclass(frozen=True)
class JobState:
    """What the cluster says about one submitted job."""

    job_id: str
    status: str  # PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED
    ray_job_id: str | None  # the driver's Ray job id (for ``ray list tasks``); None until it starts
    message: str | None
    entrypoint: str
    start_time: float | None  # seconds since the epoch; None if not started
    end_time: float | None
    exit_code: int | None  # the driver's, None while it runs or if unknown
    metadata: dict

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def cli_exit_code(self) -> int:
        """0 when the job succeeded; else the driver's own non-zero code, or 1."""
        if self.status == "SUCCEEDED":
            return EXIT_OK
        return self.exit_code if self.exit_code not in (None, 0) else EXIT_FAILED


def cluster_path(path: str) -> str:
    """A path as the job's driver will read it: URIs as given, local paths made absolute.

    The driver runs in a working directory of Ray's choosing, so a relative path would mean nothing
    there; a relative path is taken from the current directory (shared storage seen alike).
    """
    return path if is_uri(path) or os.path.isabs(path) else os.path.abspath(path)


def entrypoint(run_args: list[str], *, python: str = "python") -> str:
    """The shell command the job supervisor runs: ``python -m jobs.entrypoint run ARGS``.

    ``python`` is looked up on the head node, where Ray started (Ray's own convention): the
    interpreter that has Ray and emoray's dependencies on PATH there, as in the image of infra/.
    It is not this machine's interpreter: the dashboard address may be a tunnel to a remote head.
    ``jobs.entrypoint`` runs ``pipeline.cli`` (``emoray``) with these arguments, or, when that
    interpreter lacks a dependency, fails in one line naming it instead of with a traceback.
    """
    return shlex.join([python, "-m", "jobs.entrypoint", "run", *run_args])


def runtime_env(*, env_vars: dict[str, str] | None = None) -> dict:
    """The job's runtime environment: this project's packages and the environment variables given.

    The packages are uploaded from wherever they are imported (a checkout or site-packages), so
    the code on the cluster is the code that built the command.
    """
    import importlib

    modules = [str(Path(importlib.import_module(name).__file__).parent) for name in PACKAGES]
    env = {"py_modules": modules, "excludes": list(EXCLUDES)}
    if env_vars:
        env["env_vars"] = dict(env_vars)
    return env


class ClusterJobs:
    """A thin client of a cluster's Jobs API (the dashboard address, e.g. ``http://head:8265``).

    Token authentication is used without any setup when a token is where Ray looks for one
    (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``).
    """

    def __init__(self, address: str = DEFAULT_DASHBOARD) -> None:
        from jobs.cluster import use_token_if_available

        self.address = address if "://" in address else f"http://{address}"
        use_token_if_available()
        for name in _CHATTY_LOGGERS:  # "uploading package ..." at INFO on every call
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            from ray.job_submission import JobSubmissionClient

            self._client = JobSubmissionClient(self.address)
        except ImportError as error:
            raise ImportError("the Ray Jobs API needs ray[default]: pip install 'ray[default]==2.60.0'") from error
        except _client_errors() as error:
            raise ClusterError(f"{self.address}: cannot use the Ray Jobs API: {_reason(error)}") from error

    def submit(self, run_args: list[str], *, python: str = "python", env_vars: dict[str, str] | None = None,
               job_id: str | None = None, metadata: dict[str, str] | None = None) -> str:
        """Start ``emoray run RUN_ARGS`` on the cluster; returns the job id (Ray's submission id)."""
        command = entrypoint(run_args, python=python)
        return self._call(lambda: self._client.submit_job(
            entrypoint=command, runtime_env=runtime_env(env_vars=env_vars), submission_id=job_id,
            metadata=dict(metadata or {})), "submit the job")

    def state(self, job_id: str) -> JobState:
        info = self._call(lambda: self._client.get_job_info(job_id), f"get job {job_id}")
        return JobState(job_id=info.submission_id or job_id, status=str(info.status), ray_job_id=info.job_id,
                        message=info.message,
                        entrypoint=info.entrypoint, start_time=_seconds(info.start_time),
                        end_time=_seconds(info.end_time), exit_code=getattr(info, "driver_exit_code", None),
                        metadata=dict(info.metadata or {}))

    def logs(self, job_id: str) -> str:
        return self._call(lambda: self._client.get_job_logs(job_id), f"get the logs of job {job_id}")

    def follow(self, job_id: str) -> Iterator[str]:
        """The job's output as it is written, until the job ends."""
        stream = self._client.tail_job_logs(job_id)
        loop = asyncio.new_event_loop()
        try:
            while True:
                try:
                    yield loop.run_until_complete(stream.__anext__())
                except StopAsyncIteration:
                    return
                except _client_errors() as error:
                    raise ClusterError(f"{self.address}: lost the log stream of job {job_id} ({_reason(error)})") from error
        finally:
            loop.run_until_complete(stream.aclose())
            loop.close()

    def wait(self, job_id: str, *, poll_seconds: float = 1.0, timeout: float | None = None) -> JobState:
        """Poll until the job ends (or ``timeout`` seconds pass; then its current state)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (state := self.state(job_id)).is_terminal and (deadline is None or time.monotonic() < deadline):
            time.sleep(poll_seconds)
        return state

    def stop(self, job_id: str) -> bool:
        """Ask the job's driver to exit (SIGTERM, then SIGKILL); True if it was running."""
        return self._call(lambda: self._client.stop_job(job_id), f"stop job {job_id}")

    def _call(self, function, what: str):
        try:
            return function()
        except _client_errors() as error:
            raise ClusterError(f"{self.address}: could not {what}: {_reason(error)}") from error


def _seconds(milliseconds: int | None) -> float | None:
    return None if milliseconds is None else milliseconds / 1000


def _client_errors() -> tuple[type[BaseException], ...]:
    """What the Jobs API client raises: HTTP and connection failures, unknown jobs, refused tokens."""
    import aiohttp
    import ray.exceptions

    return ConnectionError, RuntimeError, ValueError, aiohttp.ClientError, ray.exceptions.RayError


def _reason(error: BaseException) -> str:
    import ray.exceptions

    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    if isinstance(error, ray.exceptions.AuthenticationError):
        return (f"{first} (the cluster wants its token: copy the output of `ray get-auth-token` on the head "
                f"into ~/.ray/auth_token, or set RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN)")
    return first
