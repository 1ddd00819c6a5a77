"""A real multi-node Ray cluster on 127.0.0.1 for tests: separate ``ray start --block`` processes.

Each node has its own short temp dir (Ray's socket paths must stay under 107 bytes); the cluster
has its own HOME holding its token (token authentication on, as Ray 2.60 clusters have it), and
fast node-death detection. Everything is stopped by PID: the process tree of each ``ray start``,
the head's ``gcs_server`` last; never a machine-wide ``ray stop``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))
# node death noticed after ~3 s instead of ~16 s
FAST_HEALTH_CHECKS = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "3"}
CLIENT_ENV_DROPPED = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


@dataclass
class Node:
    process: subprocess.Popen
    temp_dir: str
    log: Path
    node_id: str | None = None

    def tree(self) -> list[psutil.Process]:
        """``ray start`` and everything under it: raylet, agents, workers, job drivers."""
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


@dataclass
class LocalCluster:
    root: Path
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.home = self.root / "home"
        (self.home / ".ray").mkdir(parents=True, exist_ok=True)
        (self.home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.gcs_address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"

    def client_env(self) -> dict[str, str]:
        """What a user's shell on this machine would have: the cluster's HOME (its token), no Ray variables."""
        from models import registry

        env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV_DROPPED}
        return env | {"HOME": str(self.home), "EMORAY_HOME": str(registry.home()), "PYTHONUNBUFFERED": "1"}

    def _node_env(self) -> dict[str, str]:
        """As Ray runs on a cluster node: in the environment that has Ray and emoray's dependencies
        (``python`` on PATH is this venv's), token auth on, node death noticed fast."""
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        return self.client_env() | FAST_HEALTH_CHECKS | {"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
                                                         "PATH": path}

    def start_head(self, *, num_cpus: int) -> Node:
        return self._start(["--head", "--port", str(self.gcs_port), "--dashboard-host", "127.0.0.1",
                            "--dashboard-port", str(self.dashboard_port), "--include-dashboard", "true",
                            "--ray-client-server-port", str(free_port()),
                            "--dashboard-agent-listen-port", str(free_port())], num_cpus=num_cpus)

    def add_node(self, *, num_cpus: int) -> Node:
        return self._start(["--address", self.gcs_address, "--dashboard-agent-listen-port", "0"], num_cpus=num_cpus)

    def _start(self, arguments: list[str], *, num_cpus: int) -> Node:
        temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
        log = self.root / f"node-{len(self.nodes)}.log"
        known = set(self.node_ids())
        command = [RAY, "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", str(num_cpus),
                   "--temp-dir", temp_dir, "--metrics-export-port", str(free_port()), *arguments]
        with open(log, "w") as handle:
            process = subprocess.Popen(command, env=self._node_env(), stdout=handle, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        node = Node(process, temp_dir, log)
        self.nodes.append(node)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"ray start exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            new = set(self.node_ids()) - known
            if new and (len(self.nodes) > 1 or self._jobs_api_ready()):
                node.node_id = new.pop()
                return node
            time.sleep(0.5)
        raise TimeoutError(f"node did not join in 90 s:\n{log.read_text()[-3000:]}")

    def state(self, code: str) -> object:
        """Run ``code`` (which prints JSON) in a Python that talks to this cluster; its parsed output."""
        result = subprocess.run([sys.executable, "-c", code], env=self._node_env() | {"RAY_ADDRESS": self.gcs_address},
                                capture_output=True, text=True, timeout=60)
        if result.returncode:
            raise RuntimeError(result.stderr[-3000:])
        return json.loads(result.stdout.strip().splitlines()[-1])

    def node_ids(self) -> list[str]:
        """Ids of the alive nodes (none before the head is up)."""
        if not self.nodes:
            return []
        code = ("import json; from ray.util.state import list_nodes; "
                f"print(json.dumps([n.node_id for n in list_nodes(address={self.dashboard!r}) if n.state == 'ALIVE']))")
        try:
            return self.state(code)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError):
            return []

    def tasks(self, job_id: str) -> list[dict]:
        """Every task and actor-method attempt of one Ray job: name, node_id, state, attempt_number."""
        code = ("import json; from ray.util.state import list_tasks; "
                f"tasks = list_tasks(address={self.dashboard!r}, filters=[('job_id', '=', {job_id!r})], limit=10000, raise_on_missing_output=False); "
                "print(json.dumps([dict(name=t.name, node_id=t.node_id, state=str(t.state), attempt=t.attempt_number) for t in tasks]))")
        return self.state(code)

    def _jobs_api_ready(self) -> bool:
        code = ("import json; from ray.job_submission import JobSubmissionClient; "
                f"print(json.dumps(len(JobSubmissionClient({self.dashboard!r}).list_jobs())))")
        try:
            return isinstance(self.state(code), int)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError):
            return False

    def kill(self, node: Node) -> None:
        """Kill a node at once (SIGKILL to its whole process tree), as when a machine is lost."""
        processes = node.tree()
        gcs = [p for p in processes if _name(p) == "gcs_server"]
        for process in [p for p in processes if p not in gcs] + gcs:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(processes, timeout=20)
        node.process.wait(timeout=20)

    def stop(self) -> None:
        """Stop every node, workers first and the head last, and remove their temp dirs."""
        for node in reversed(self.nodes):
            self.kill(node)
            shutil.rmtree(node.temp_dir, ignore_errors=True)
        self.nodes.clear()


def _name(process: psutil.Process) -> str:
    try:
        return process.name()
    except psutil.NoSuchProcess:
        return ""
