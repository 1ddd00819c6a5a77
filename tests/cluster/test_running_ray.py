"""``emoray run`` on a machine where a user's own Ray runs (``ray start --head``, recorded in Ray's temp dir).

Without ``--address`` emoray starts its embedded Ray whatever else runs; it joins only the cluster
``RAY_ADDRESS`` (or ``--address``) names, and then passes no start-up option. The head runs in its own
HOME and temp dir, and is stopped by its process tree, never by ``ray stop``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from tests.cluster.nodes import CLIENT_ENV_DROPPED, RAY, free_port
from tests.conftest import shared

PHOTO = "photos/multi_face.jpg"


@pytest.fixture(scope="module")
def running_ray():
    """A user's ``ray start --head``, recorded in ``$RAY_TMPDIR/ray/ray_current_cluster`` as Ray does."""
    from models import registry

    root = Path(tempfile.mkdtemp(prefix="rr", dir="/tmp"))  # Ray's socket paths must stay under 107 bytes
    (root / "home").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV_DROPPED} | {
        "HOME": str(root / "home"), "RAY_TMPDIR": str(root), "EMORAY_HOME": str(registry.home()),
        "RAY_USAGE_STATS_ENABLED": "0"}
    port, log = free_port(), root / "head.log"
    command = [RAY, "start", "--head", "--block", "--port", str(port), "--node-ip-address", "127.0.0.1",
               "--num-cpus", "2", "--include-dashboard", "false", "--metrics-export-port", str(free_port()),
               "--dashboard-agent-listen-port", str(free_port()), "--ray-client-server-port", str(free_port())]
    with open(log, "w") as handle:
        head = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        recorded = (root / "ray" / "ray_current_cluster").read_text().strip()  # what a bare ray.init() would join
        assert recorded.endswith(f":{port}")
        yield SimpleNamespace(env=env, address=recorded, session=(root / "ray" / "session_latest").resolve())
    finally:
        processes = [psutil.Process(head.pid), *psutil.Process(head.pid).children(recursive=True)]
        gcs = [p for p in processes if p.name() == "gcs_server"]
        for process in [p for p in processes if p not in gcs] + gcs:  # the GCS last, or the others hang
            process.kill()
        psutil.wait_procs(processes, timeout=20)
        shutil.rmtree(root, ignore_errors=True)


def _emoray_run(out: Path, env: dict) -> subprocess.CompletedProcess:
    """``emoray run`` from a shell of its own HOME (the token an embedded Ray writes there stays there:
    a token sent to this cluster, which has no authentication, would break its actors)."""
    home = out.parent / "home"
    home.mkdir()
    command = [sys.executable, "-m", "pipeline.cli", "run", str(shared(PHOTO)), "-o", str(out), "--no-annotate", "--json"]
    return subprocess.run(command, env=env | {"HOME": str(home)}, capture_output=True, text=True, timeout=300)


def _drivers(session: Path) -> list[str]:
    """The drivers that joined the cluster of ``session`` (each leaves a core-driver log there)."""
    return sorted(path.name for path in (session / "logs").glob("python-core-driver-*.log"))


def test_without_an_address_a_run_starts_its_own_ray_beside_a_running_one(running_ray, tmp_path):
    result = _emoray_run(tmp_path / "out", running_ray.env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["videos"][0]["status"] == "complete"
    assert "object_store_memory must not be provided" not in result.stderr
    assert _drivers(running_ray.session) == []  # it did not join the user's cluster


def test_ray_address_names_the_cluster_a_run_joins_with_no_start_up_options(running_ray, tmp_path):
    result = _emoray_run(tmp_path / "out", running_ray.env | {"RAY_ADDRESS": running_ray.address})
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["videos"][0]["status"] == "complete"
    assert len(_drivers(running_ray.session)) == 1  # this run, on the user's cluster


def test_a_run_called_in_process_ends_the_ray_it_started_and_only_that(tmp_path):
    """``main`` called from Python (as CliRunner does): the embedded Ray ends with the run, not at the
    process's exit. A Ray that ran before the run is left running: tests/pipeline/test_batch.py holds that."""
    import ray
    from click.testing import CliRunner

    from pipeline.cli import main

    assert not ray.is_initialized(), "an earlier test left its Ray running"
    result = CliRunner().invoke(main, ["run", str(shared(PHOTO)), "-o", str(tmp_path / "out"), "--no-annotate"])
    assert result.exit_code == 0, result.output
    assert not ray.is_initialized()
