"""Stopping long work cleanly on SIGINT and SIGTERM.

Schedulers, ``timeout`` and ``docker stop`` send SIGTERM, people press Ctrl-C: either one asks the
work to stop at its next safe point (finished outputs kept, partial ones dropped) and the process to
exit with the shell's code for that signal (130, 143). A second signal exits at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Callable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Set once, by a signal handler or a caller; long loops poll ``is_set()``."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_number: int | None = None
        self._callbacks: list[Callable[[], None]] = []

    def call_when_set(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once, when the request is first set, in the thread that sets it (a signal
        handler: keep it short)."""
        self._callbacks.append(callback)

    def set(self, signal_number: int | None = None) -> None:
        first = not self._event.is_set()
        if first:
            self.signal_number = signal_number
        self._event.set()
        for callback in self._callbacks if first else ():
            callback()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self.signal_number).name if self.signal_number else None

    @property
    def exit_code(self) -> int | None:
        """128 + the signal number, as shells report a process ended by that signal."""
        return 128 + self.signal_number if self.signal_number else None


class SignalStop:
    """Turns SIGINT and SIGTERM into a ``StopRequest`` while active; ``install()`` again after a library
    (Ray's ``ray.init``) has put its own handlers in their place."""

    def __init__(self) -> None:
        self.request = StopRequest()
        self._previous = {number: signal.getsignal(number) for number in SIGNALS}

    def install(self) -> None:
        for number in SIGNALS:
            signal.signal(number, self._handle)

    def restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, signal_number: int, frame: object) -> None:
        if self.request.is_set():  # the second signal: stop now
            signal.signal(signal_number, signal.SIG_DFL)
            os.kill(os.getpid(), signal_number)
            return
        self.request.set(signal_number)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[SignalStop]:
    """SIGINT and SIGTERM set ``.request`` inside the block (main thread only); handlers restored after."""
    stop = SignalStop()
    stop.install()
    try:
        yield stop
    finally:
        stop.restore()
