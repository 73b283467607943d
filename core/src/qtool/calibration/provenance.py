"""Where the samples of a batch of calibration data came from, so that a run of the model that fails on a batch
names the file (or the item) that holds the feed, and what it fed, instead of a batch number.

:class:`CalibrationData` yields its batches as :class:`Sourced` dicts: ``{input name: array}`` that also know their
:data:`Source` parts (the file or item, and which of its samples), in order. Cutting and joining batches keeps them
(:func:`rows`, :func:`joined`); any other dict has no source. :func:`feed_failure` writes the line a failed run
raises: the file first, as the data's other errors do (``calib/7.npz (input 'x' float32 [2, 7]): the float model
fails in ONNX Runtime at node 'mm' (MatMul): ...``); where a batch joins samples of several files, each part runs
alone to find the one that fails.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from ..errors import FeedError

SHOWN_INPUTS = 3  # the inputs a line describes (a decoder's 50 past states: the first few, and a count)


class Source(NamedTuple):
    """Samples ``first .. first + count - 1`` of the item ``where`` (a path, ``calibration item 3``), which holds
    ``total`` (1 for a feed: a whole model call; 0 where the positions are not known: samples holding NaN were
    dropped from it)."""

    where: str
    first: int
    count: int
    total: int

    def describe(self) -> str:
        if self.count == self.total or not self.total:
            return self.where
        last = self.first + self.count - 1
        return f"{self.where} sample {self.first}" if last == self.first else \
            f"{self.where} samples {self.first}-{last}"


class Sourced(dict):
    """``{input name: array}`` with ``sources``: the :class:`Source` of its samples, in order."""

    def __init__(self, arrays: Mapping[str, np.ndarray], sources: Sequence[Source]) -> None:
        super().__init__(arrays)
        self.sources = tuple(sources)


def sourced(arrays: Mapping[str, np.ndarray], where: str, samples: int, *, first: int = 0,
            total: int | None = None) -> Sourced:
    """The arrays of ``samples`` samples (1: a feed) of one item (file, Python item): its samples ``first ..`` of
    ``total`` (default: the whole item; 0: their positions are not known, some were dropped)."""
    return Sourced(arrays, [Source(where, first, samples, samples if total is None else total)])


def sources_of(batch: Mapping) -> tuple[Source, ...]:
    """Where ``batch``'s samples came from (none for a dict that does not know)."""
    return getattr(batch, "sources", ())


def rows(batch: Mapping[str, np.ndarray], begin: int, end: int, *, copy: bool = False) -> dict[str, np.ndarray]:
    """Samples ``begin .. end - 1`` of ``batch`` (samples along the first axis), with their sources; ``copy``: arrays
    of their own (not views that keep the whole batch alive)."""
    arrays = {name: np.array(a[begin:end]) if copy else a[begin:end] for name, a in batch.items()}
    parts, at = [], 0
    for part in sources_of(batch):
        low, high = max(begin, at), min(end, at + part.count)
        if low < high:
            parts.append(part._replace(first=part.first + low - at, count=high - low))
        at += part.count
    return Sourced(arrays, parts) if parts else arrays


def joined(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The batches ``parts`` as one (samples along the first axis), with their sources in order."""
    if len(parts) == 1:
        return parts[0]
    arrays = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    sources = [source for part in parts for source in sources_of(part)]
    return Sourced(arrays, sources) if all(sources_of(part) for part in parts) else arrays


def feed_failure(batch: Mapping[str, np.ndarray], message: str, *, retry: Callable[[Mapping], object] | None = None,
                 errors: tuple[type[BaseException], ...] = (Exception,),
                 describe: Callable[[BaseException], str] = str) -> str:
    """``message`` (why a run of the model on ``batch`` failed) led by where the batch came from and what it fed:
    ``'calib/7.npz (input 'x' float32 [2, 7]): <message>'``; ``message`` alone where the batch knows no source.
    Where it holds samples of several items, ``retry(part)`` runs each item's part alone: the first that raises one
    of ``errors`` is named, with its own error (``describe(error)``); where none does, every item is."""
    parts = sources_of(batch)
    if not parts:
        return message
    if len(parts) > 1 and retry is not None:
        at = 0
        for part in parts:
            piece = rows(batch, at, at + part.count)
            at += part.count
            try:
                retry(piece)
            except errors as exc:
                return f"{_where(piece)} ({fed(piece)}): {describe(exc)}"
    return f"{_where(batch)} ({fed(batch)}): {message}"


def feed_error(batch: Mapping[str, np.ndarray], message: str, **keywords) -> FeedError | None:
    """:func:`feed_failure` as the error to raise (keywords: its own), or None where ``batch`` knows no source: the
    caller raises what it raised before."""
    return FeedError(feed_failure(batch, message, **keywords)) if sources_of(batch) else None


def _where(batch: Mapping) -> str:
    parts = sources_of(batch)
    shown = ", ".join(part.describe() for part in parts[:SHOWN_INPUTS])
    return shown + (f" and {len(parts) - SHOWN_INPUTS} more" if len(parts) > SHOWN_INPUTS else "")


def fed(batch: Mapping[str, np.ndarray]) -> str:
    """``"input 'x' float32 [2, 7]"``: the arrays a run was fed (the first :data:`SHOWN_INPUTS`, and a count)."""
    items = list(batch.items())
    shown = ", ".join(f"{name!r} {_array(a)}" for name, a in items[:SHOWN_INPUTS])
    more = f" and {len(items) - SHOWN_INPUTS} more" if len(items) > SHOWN_INPUTS else ""
    return f"input{'s' if len(items) > 1 else ''} {shown}{more}"


def _array(value) -> str:
    array = np.asarray(value) if not hasattr(value, "shape") else value
    return f"{np.dtype(array.dtype)} {list(array.shape)}"
