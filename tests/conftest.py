"""Shared fixtures: the real data in ../shared/data, the real models loaded once per session, a local Ray,
and headless Chromium (``render_page``, the ``chromium`` fixture) for the pages emoray writes or serves."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# A one-thread run (OMP_NUM_THREADS=1: `make test` runs tests/models again so) must reach onnxruntime and Ray
# Train's workers too: onnxruntime ignores OMP_NUM_THREADS; emoray's models and trainings take EMORAY_NUM_THREADS.
if os.environ.get("OMP_NUM_THREADS"):
    os.environ.setdefault("EMORAY_NUM_THREADS", os.environ["OMP_NUM_THREADS"])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "trains: runs a training on Ray Train (a minute or more); its bars were "
                                       "measured over seeds at one and two threads, so `make test` runs it once")
    config.addinivalue_line("markers", "once: a record check that costs a minute or more at one thread and was held at "
                                       "one and two threads when the record was made, so `make test` runs it once")


def shared(relative: str) -> Path:
    """Path of a file in ../shared/data; skips the test with the reason when it is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared data lives beside the project root in ../shared/data")
    return path


def read_rgb(relative: str) -> np.ndarray:
    """A shared photo as an (H, W, 3) uint8 RGB array."""
    return np.ascontiguousarray(cv2.imread(str(shared(relative)), cv2.IMREAD_COLOR)[..., ::-1])


@pytest.fixture(scope="session")
def detector():
    from models import FaceDetector

    return FaceDetector(device="cpu")


@pytest.fixture(scope="session")
def classifier():
    from models import EmotionClassifier

    return EmotionClassifier("mini-xception", device="cpu")


@pytest.fixture(scope="module")
def local_ray():
    """A real local Ray cluster of 2 CPUs for the tests of one module, with its own short temp dir."""
    import shutil
    import tempfile

    import ray

    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, _temp_dir=temp_dir)
    yield
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def render_page(url: str, timeout: float = 10.0, *, screenshot: str | os.PathLike | None = None,
                virtual_time_budget: float | None = None,
                window_size: tuple[int, int] = (1280, 800), extra_args: tuple[str, ...] = ()) -> tuple[str, Path]:
    """Loads ``url`` in headless Chromium; returns (the DOM as HTML after the load, a PNG screenshot).

    ``extra_args`` go to Chromium as they are; its stderr is kept beside the screenshot (``.log``).

    One run of ``chromium --headless --no-sandbox --disable-gpu --timeout=MS --dump-dom
    --screenshot=PNG URL`` (Debian's Chromium 156; --headless is the new headless mode there): about
    2 s on 2 busy cores for a page that loads, ``timeout`` + ~1.5 s for one that never finishes loading.

    Which flags make it return on a page with a live MJPEG ``<img>`` (multipart/x-mixed-replace that
    never ends), measured here:

    - An MJPEG stream that delivers frames is harmless: the image's ``load`` event fires with the first
      part, the page's load completes, and even plain ``--dump-dom`` returns (~2 s) with the current
      frame in the screenshot.
    - An image whose stream never delivers a first frame (or a request that never answers) keeps the
      page loading: plain ``--dump-dom`` / ``--screenshot`` never return. ``--timeout=MS`` bounds it:
      after MS ms Chromium stops loading, then dumps the DOM and takes the screenshot (a broken-image
      placeholder where the stream would be).
    - ``--virtual-time-budget=MS`` runs the page's timers for MS ms of fast-forwarded time after the
      load (so a ``setInterval`` that fills in numbers has run before the dump; without it the DOM is
      taken at the load event), but virtual time stands still while any fetch is pending, and
      ``--timeout`` does not cancel every fetch: with a never-answered ``/favicon.ico`` (or a stalled
      stream) Chromium then never returns. So it is off by default (``virtual_time_budget=None``);
      pass seconds only for pages whose every request completes (answer /favicon.ico with 404).

    A hard limit of ``timeout`` + 60 s kills Chromium's process group (and raises) should it hang anyway.
    Skips the calling test when Chromium is absent.
    """
    chromium = chromium_path()
    if chromium is None:
        pytest.skip("chromium is not installed (`make system-deps` installs Debian's chromium)")
    work = Path(tempfile.mkdtemp(prefix="chromium-"))
    png = Path(screenshot) if screenshot is not None else work / "screenshot.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
        "--no-default-browser-check", "--disable-extensions", "--mute-audio",
        f"--user-data-dir={work / 'profile'}", f"--window-size={window_size[0]},{window_size[1]}",
        f"--timeout={int(timeout * 1000)}", *extra_args, "--dump-dom", f"--screenshot={png}", url,
    ]
    if virtual_time_budget is not None:
        command.insert(-3, f"--virtual-time-budget={int(virtual_time_budget * 1000)}")
    env = dict(os.environ, HOME=str(work))  # nothing in the real home; no D-Bus session to find
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               env=env, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout + 60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        shutil.rmtree(work / "profile", ignore_errors=True)
        raise RuntimeError(f"chromium did not return within {timeout + 60:.0f} s for {url}")
    try:
        os.killpg(process.pid, signal.SIGKILL)  # any helper process left behind in its group
    except ProcessLookupError:
        pass
    shutil.rmtree(work / "profile", ignore_errors=True)
    png.with_suffix(".log").write_bytes(err)  # Chromium's stderr: console messages with --enable-logging=stderr
    if process.returncode != 0 or not png.exists():
        raise RuntimeError(f"chromium failed for {url} (exit status {process.returncode}):\n"
                           f"{err.decode(errors='replace')[-3000:]}")
    return out.decode(errors="replace"), png


@pytest.fixture
def chromium(tmp_path):
    """``render(url, timeout=10.0, **kw) -> (dom_html, png_path)``, screenshots in the test's tmp_path."""
    if chromium_path() is None:
        pytest.skip("chromium is not installed (`make system-deps` installs Debian's chromium)")
    counter = iter(range(1_000_000))

    def render(url: str, timeout: float = 10.0, **kwargs) -> tuple[str, Path]:
        kwargs.setdefault("screenshot", tmp_path / f"page-{next(counter)}.png")
        return render_page(url, timeout, **kwargs)

    return render
