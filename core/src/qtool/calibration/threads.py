"""Small tensor work runs on one torch thread.

Observers' arithmetic (histograms, candidate errors) and single-sample runs (the agreement check) are many small,
memory-bound ops: a second intra-op thread gains little there, and on a machine whose cores are busy with other
work the thread pool's synchronisation made them 5-20x slower (measured on the shared 2-core development machine:
4 single PP-OCRv4 crops 1.8 s on one thread, 42 s on two). Batched model runs keep the configured thread count.
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
