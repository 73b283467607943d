"""Observers' arithmetic runs on one torch thread.

Their work is many small, memory-bound tensor ops (histograms, candidate errors): a second intra-op thread gains
little there, and on a machine whose cores are busy with other work the thread pool's synchronisation made the
same calibration 5-7x slower (bench/speed.py). The model's own ops keep the configured thread count.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(1)``, then restore the previous count."""
    saved = torch.get_num_threads()
    if saved == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
