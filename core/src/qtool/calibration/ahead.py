"""Compute the items of an iterator one ahead, in a background thread, while the caller works on the current one.

Calibration's onnxruntime runs release the GIL, and so do most of the observers' numpy operations: the next run
computes while the observers take this one in. Exactly one item is computed ahead (two are alive at most: the
caller's and the next), exceptions reach the caller as they were raised (when it asks for the item that raised
them), and the thread ends when the iteration does, also when the caller stops early or raises: close the
generator (``contextlib.closing``) to wait for the item in progress there and then.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
_END = object()


def one_ahead(items: Iterator[T]) -> Iterator[T]:
    """The items of ``items`` in order, each computed in a background thread while the caller holds the one before."""
    with ThreadPoolExecutor(1, thread_name_prefix="qtool-ahead") as pool:
        pending = pool.submit(next, items, _END)
        while (item := pending.result()) is not _END:
            pending = pool.submit(next, items, _END)
            yield item
            item = None  # the caller is done with it: let it go before the next one arrives
