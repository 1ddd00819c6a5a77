"""A real S3-compatible server on 127.0.0.1 for tests (moto's server mode), and a way to cut it off.

``S3Server`` runs ``python -m moto.server`` on a free port; clients reach it as they reach any S3 endpoint,
through ``AWS_ENDPOINT_URL`` (what pyarrow and the AWS SDKs read) and dummy credentials. ``Gate`` is a TCP
forwarder in front of it: ``close()`` refuses every connection, as a store that went away does (moto keeps
its objects, so a test can look at what was left), and ``open()`` lets them through again on the same port.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
import urllib.request

from tests.cluster.nodes import free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class S3Server:
    """moto's S3 server on 127.0.0.1:``port``; ``env(endpoint)`` is what a client's environment needs."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2)
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto's S3 server did not start")
                time.sleep(0.2)

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        return CREDENTIALS | {"AWS_ENDPOINT_URL": endpoint or self.endpoint}

    def filesystem(self):
        """A pyarrow S3 filesystem on this server (buckets may be created through it)."""
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"], secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                                 region=CREDENTIALS["AWS_DEFAULT_REGION"], endpoint_override=self.endpoint,
                                 scheme="http", allow_bucket_creation=True)

    def stop(self) -> None:
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        if self.process.poll() is None:
            self.process.kill()


@contextlib.contextmanager
def environment(values: dict[str, str]):
    """``os.environ`` with ``values`` set inside the block (processes started there inherit them)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def serving(bucket: str):
    """A started S3Server with ``bucket`` made and its endpoint in this process's environment (so in that of a
    Ray started meanwhile); stopped on leaving."""
    server = S3Server()
    try:
        server.filesystem().create_dir(bucket)
        with environment(server.env()):
            yield server
    finally:
        server.stop()


class Gate:
    """Forwards 127.0.0.1:``port`` to ``target_port``; ``close()`` refuses and cuts every connection."""

    def __init__(self, target_port: int) -> None:
        self.port, self.target_port = free_port(), target_port
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self.open()

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        """No new connection is accepted (refused), and the open ones are cut."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections += [client, upstream]
            threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()


def _pipe(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    selector = selectors.DefaultSelector()
    selector.register(a, selectors.EVENT_READ, b)
    selector.register(b, selectors.EVENT_READ, a)
    try:
        while True:
            for key, _ in selector.select():
                data = key.fileobj.recv(1 << 16)
                if not data:
                    return
                key.data.sendall(data)
    except OSError:
        return
    finally:
        selector.close()
        for end in (a, b):
            with contextlib.suppress(OSError):
                end.close()
