"""How many threads qtool's own runs use; torch's thread count is set only where torch is loaded already.

Small tensor work (the agreement check's single samples, the export's weight codes) always runs on one torch
thread: it is many small, memory-bound ops, a second intra-op thread gains little there, and on a machine whose
cores are busy the thread pool's synchronisation made it 5-20x slower (measured on the shared 2-core development
machine: 4 single PP-OCRv4 crops 1.8 s on one thread, 42 s on two; all-MiniLM-L6-v2's int8 weight codes 0.04 s on
one, 0.48 s on two). The calibration observers compute in numpy, on one thread.

Whole passes (and onnxruntime's float runs) use :func:`pass_threads` threads: ``QTOOL_NUM_THREADS`` when set, else
one thread when the machine's one-minute load already fills every core this process may use (other work owns them;
more threads only wait on each other: a small CNN calibrated in 2.8 s on one thread and 15 s on two at load 26),
else torch's default: its current count where torch is loaded, else the count it would start with, read without
importing it (the physical cores, here counted among the CPUs this process may use, or fewer where
``MKL_NUM_THREADS`` or ``OMP_NUM_THREADS`` asks for fewer).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ENV = "QTOOL_NUM_THREADS"
_CPUS = Path("/sys/devices/system/cpu")


def pass_threads() -> int:
    """The thread count for qtool's passes (see the module docstring)."""
    value = os.environ.get(ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            from ..errors import QtoolError

            raise QtoolError(f"environment variable {ENV}: must be a whole number >= 1, got {value!r}")
        return int(value)
    if hasattr(os, "getloadavg") and os.getloadavg()[0] >= len(_usable_cpus()):
        return 1
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else _torch_default_threads()


def _usable_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def _torch_default_threads() -> int:
    """The thread count torch starts with: the physical cores (of the CPUs this process may use; their logical count
    where the topology cannot be read), fewer where ``MKL_NUM_THREADS`` or else ``OMP_NUM_THREADS`` asks for fewer
    (torch takes MKL's count, which never exceeds the physical cores)."""
    cpus = _usable_cpus()
    try:
        cores = len({tuple((_CPUS / f"cpu{cpu}" / "topology" / name).read_text()
                           for name in ("physical_package_id", "core_id")) for cpu in cpus})
    except OSError:
        cores = len(cpus)
    for name in ("MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return min(int(value), cores)
    return cores


@contextmanager
def threads(count: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(count)`` where torch is loaded, then restore the previous count
    (without torch loaded, nothing to set: nothing here imports it)."""
    torch = sys.modules.get("torch")
    saved = torch.get_num_threads() if torch is not None else count
    if saved == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def one_thread():
    """:func:`threads` with one thread: for small tensor work."""
    return threads(1)
