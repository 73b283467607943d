"""Open a page in headless Chromium (Debian's ``chromium``): its DOM after scripts ran, console messages, screenshot.

Used by the report's browser test and benchmark. The console is read from
Chromium's own log (``--enable-logging=stderr``), where every console message
and uncaught error of the page appears as a ``CONSOLE`` line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import tempfile
from dataclasses import dataclass
from pathlib import Path

CONSOLE_LINE = re.compile(r":CONSOLE[:(]\d+\)?\]? (.*)")


@dataclass(frozen=True)
class PageLoad:
    dom: str  # the serialized DOM once the page settled
    console: list[str]  # console messages and uncaught errors, in order
    seconds: float  # wall time of the Chromium run


def chromium() -> str | None:
    """The Chromium executable, or None when it is not installed."""
    return next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)


def load(page: str | os.PathLike, *, screenshot: str | os.PathLike | None = None, size: tuple[int, int] = (1400, 2400),
         budget_ms: int = 10000, timeout: float = 120.0) -> PageLoad:
    """Load ``page`` from a file:// URL; dump its DOM, or save a PNG ``screenshot`` when given (dom is then '')."""
    executable = chromium()
    if executable is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
    url = Path(page).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="qtool-chromium-") as profile:
        command = [executable, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                   "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
                   "--enable-logging=stderr", "--v=0", f"--virtual-time-budget={budget_ms}",
                   f"--window-size={size[0]},{size[1]}"]
        command += [f"--screenshot={Path(screenshot).resolve()}"] if screenshot else ["--dump-dom"]
        start = time.perf_counter()
        done = subprocess.run([*command, url], capture_output=True, text=True, timeout=timeout)
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited with {done.returncode}: {done.stderr.strip()[-2000:]}")
    console = [m.group(1) for line in done.stderr.splitlines() if (m := CONSOLE_LINE.search(line))]
    return PageLoad("" if screenshot else done.stdout, console, seconds)
