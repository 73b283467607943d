"""How many torch threads qtool's own runs use.

Small tensor work (observers' histograms and candidate errors, the agreement check's single samples, the export's
weight codes) always runs on one thread: it is many small, memory-bound ops, a second intra-op thread gains little
there, and on a machine whose cores are busy the thread pool's synchronisation made it 5-20x slower (measured on the
shared 2-core development machine: 4 single PP-OCRv4 crops 1.8 s on one thread, 42 s on two; all-MiniLM-L6-v2's int8
weight codes 0.04 s on one, 0.48 s on two).

Whole passes run on :func:`pass_threads` threads: ``QTOOL_NUM_THREADS`` when set, else one thread when the
machine's one-minute load already fills every core this process may use (other work owns them; more threads only
wait on each other: a small CNN calibrated in 2.8 s on one thread and 15 s on two at load 26), else torch's
default.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

ENV = "QTOOL_NUM_THREADS"


def pass_threads() -> int:
    """The torch thread count for qtool's passes (see the module docstring)."""
    value = os.environ.get(ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            from ..errors import QtoolError

            raise QtoolError(f"environment variable {ENV}: must be a whole number >= 1, got {value!r}")
        return int(value)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if hasattr(os, "getloadavg") and os.getloadavg()[0] >= cores:
        return 1
    return torch.get_num_threads()


@contextmanager
def threads(count: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(count)``, then restore the previous count."""
    saved = torch.get_num_threads()
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
