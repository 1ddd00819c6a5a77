"""The bench's view of its processes: peak memory (RSS and PSS, summed) and the CPU time they used; and one
process's RSS over time, for the live runs' growth check."""

from __future__ import annotations

import os
import threading
import time

import psutil

INTERVAL_S = 0.1
# PSS reads every mapping of a process (/proc/PID/smaps: ~2 ms a process here, 18 ms for a job's 8), so it is
# sampled less often than RSS, which costs nothing: at every 0.1 s it took ~20% of a core from what it measured
PSS_EVERY = 5


class Monitor:
    """Samples our processes in a thread for the whole bench: peak summed RSS and PSS, and CPU time.

    Ours are this process (or ``root``) and its descendants, which an embedded Ray's raylet and workers all are; with
    an external cluster, this user's ``ray::`` processes (of any Ray session). RSS counts a shared page
    once per process that maps it (the libraries every Ray worker loads), so its sum overstates; PSS
    (proportional set size) splits each shared page among the processes that map it, so its sum is
    the memory the job really takes. CPU time is kept per process as last seen, because Ray does not
    fold exited workers into its children's times; what the machine spent beyond ours is the share
    other work took, which makes every number low.
    """

    def __init__(self, *, external: bool, root: psutil.Process | None = None) -> None:
        self._me, self._external = root or psutil.Process(), external
        self._started, self._busy_before = time.time(), self._machine_busy()
        self._cpu: dict[tuple[int, float], list[float]] = {}  # (pid, create time) -> [first, last] seconds
        self._lock, self._stop = threading.RLock(), threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)
        self.baseline = self.peak = self.baseline_pss = self.peak_pss = 0.0
        self._pss: dict[int, float] = {}  # pid -> PSS when last read
        self._samples = 0
        self.own_cpu_s = 0.0  # the sampling thread's CPU time: spent in the process it watches, not by it

    def __enter__(self) -> "Monitor":
        self.reset()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def reset(self) -> None:
        """Start new peaks from the memory now."""
        with self._lock:
            self.peak = self.peak_pss = 0.0
            self.baseline, self.baseline_pss = self.sample(read_pss=True)

    def sample(self, *, read_pss: bool = False) -> tuple[float, float]:
        """Summed RSS and PSS in bytes now (PSS read every ``PSS_EVERY`` samples, for new processes and when
        ``read_pss``; else as last read); records CPU times on the way."""
        with self._lock:  # a sample from before reset() must not raise the new peak
            try:
                processes = {p.pid: p for p in [self._me, *self._me.children(recursive=True)]}
            except psutil.Error:  # the root has exited (a fresh run that just ended)
                return 0.0, 0.0
            if self._external:
                for p in psutil.process_iter(["cmdline", "username"]):
                    if p.info["username"] == self._me.username() and (p.info["cmdline"] or [""])[0].startswith("ray::"):
                        processes.setdefault(p.pid, p)
            rss = pss = 0.0
            read_pss = read_pss or self._samples % PSS_EVERY == 0
            self._samples += 1
            for process in processes.values():
                full = read_pss or process.pid not in self._pss
                try:
                    with process.oneshot():
                        memory = process.memory_full_info() if full else process.memory_info()
                        cpu, created = sum(process.cpu_times()[:2]), process.create_time()
                except psutil.Error:
                    continue
                if full:
                    self._pss[process.pid] = getattr(memory, "pss", memory.rss)
                rss, pss = rss + memory.rss, pss + self._pss[process.pid]
                self._cpu.setdefault((process.pid, created), [0.0 if created > self._started else cpu, cpu])[1] = cpu
            self.peak, self.peak_pss = max(self.peak, rss), max(self.peak_pss, pss)
            return rss, pss

    def other_cpu_share(self, wall_seconds: float) -> float:
        """Share of the machine's CPU time (0..1) that processes other than ours used since the start."""
        ours = sum(last - first for first, last in self._cpu.values())
        return max(0.0, self._machine_busy() - self._busy_before - ours) / (wall_seconds * os.cpu_count())

    @staticmethod
    def _machine_busy() -> float:
        times = psutil.cpu_times()
        return times.user + times.nice + times.system + times.irq + times.softirq

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            self.sample()
            self.own_cpu_s = time.thread_time()


class RssSampler:
    """This process's RSS every half second while in the block: ``samples`` (seconds since start, MB), ``peak_mb``."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval, self.samples = interval, []
        self._stop, self._process = threading.Event(), psutil.Process()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "RssSampler":
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append((time.monotonic() - self.started, self._process.memory_info().rss / 2**20))

    @property
    def peak_mb(self) -> float:
        return max((mb for _, mb in self.samples), default=self._process.memory_info().rss / 2**20)
