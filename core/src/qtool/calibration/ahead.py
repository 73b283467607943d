"""Compute the next item of an iterator in a background thread while the caller works on the current one.

Calibration's onnxruntime runs release the GIL, and so do most of the observers' numpy operations: the next run
computes while the observers take this one in. One item at most is computed ahead, from when the caller calls
:meth:`OneAhead.ahead` (or asks for it); exceptions reach the caller as they were raised, when it asks for the item
that raised them; the thread ends with :meth:`OneAhead.close` (the ``with`` block), after the item under way.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
_END = object()


class OneAhead(Generic[T]):
    """The items of ``items`` in order; :meth:`ahead` starts computing the next one in a background thread."""

    def __init__(self, items: Iterator[T]) -> None:
        self._items = items
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="qtool-ahead")
        self._pending: Future | None = None
        self._ended = False

    def ahead(self) -> None:
        """Start computing the next item, unless it is under way already or the items have ended."""
        if self._pending is None and not self._ended:  # in the caller's context (qtool.one_at_a_time: its run's)
            self._pending = self._pool.submit(contextvars.copy_context().run, next, self._items, _END)

    def __iter__(self) -> OneAhead[T]:
        return self

    def __next__(self) -> T:
        self.ahead()
        if self._pending is None:
            raise StopIteration
        pending, self._pending = self._pending, None
        item = pending.result()  # an exception raised computing it is raised here
        if item is _END:
            self._ended = True
            raise StopIteration
        return item

    def close(self) -> None:
        """Wait for the item under way, if any, and end the thread."""
        self._ended = True
        self._pool.shutdown(wait=True)

    def __enter__(self) -> OneAhead[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
