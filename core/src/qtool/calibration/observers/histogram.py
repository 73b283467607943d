"""A fixed-size histogram that widens itself exactly, and the observers built on it.

Bins have a power-of-two width ``2**e`` and sit on the grid anchored at zero:
bin ``a`` (an absolute index) holds ``[a * 2**e, (a + 1) * 2**e)``. When a batch
reaches past the window, the width doubles as often as needed and every old
bin ``a`` falls exactly into new bin ``a >> d``. The width depends only on the
overall range seen, so the counts are those of a histogram of all the data
at that width: the result does not depend on how the data was batched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CalibrationError
from .base import Observer, row_bounds

DEFAULT_BINS = 4096
BLOCK = 1 << 16  # values one block of RunningHistogram.add computes on: its scratch buffers (768 KiB) stay in the cache
# (with many channels a block is larger: 4 * bins values a channel, or BLOCK if fewer, as each block's bincount walks
# channels * bins counts; 256 channels of 16,000 values took 92 ms a batch in blocks of BLOCK values, 25 so)
GATHERED = 4096  # values of small batches a histogram observer gathers, then counts at once (16 KiB a tensor)
_EXP_FLOOR = -126  # narrowest bin width, 2**-126; its inverse is still a float32


@dataclass(frozen=True)
class ChannelHistogram:
    """One channel's counts; bin ``i`` holds ``[(start + i) * width, (start + i + 1) * width)``."""

    counts: np.ndarray  # float64 (bins,)
    start: int
    width: float
    lo: float  # finite data bounds, widened to contain 0
    hi: float

    @property
    def total(self) -> float:
        return float(self.counts.sum())

    def magnitudes(self) -> np.ndarray:
        """Counts of ``|x|`` on bins ``[i * width, (i + 1) * width)``, i = 0 .. last nonzero."""
        index = self.start + np.arange(self.counts.size)
        folded = np.where(index >= 0, index, -index - 1)
        counts = np.bincount(folded, weights=self.counts)
        nonzero = np.flatnonzero(counts)
        return counts[: nonzero[-1] + 1] if nonzero.size else counts[:1]

    def quantile(self, q: float) -> float:
        """The value below which a share ``q`` of the counts lies (linear inside a bin)."""
        return bin_quantile(self.counts, q) * self.width + self.start * self.width


def bin_quantile(counts: np.ndarray, q: float) -> float:
    """Position in bins (0 .. len) below which a share ``q`` of ``counts`` lies."""
    cumulative = np.cumsum(counts)
    target = q * cumulative[-1]
    i = int(np.searchsorted(cumulative, target, side="left"))
    if i >= counts.size:
        return float(counts.size)
    below = cumulative[i - 1] if i else 0.0
    return i + (target - below) / counts[i] if counts[i] else float(i)


class RunningHistogram:
    """Per-channel histograms of fixed size, widened exactly as data arrives."""

    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        if int(bins) < 16:
            raise CalibrationError(f"a histogram needs at least 16 bins, got {bins}")
        self.bins = int(bins)
        self.counts: np.ndarray | None = None  # (C, bins) int64
        self.exponent: np.ndarray | None = None  # (C,) int64: bin width is 2**exponent
        self.start: np.ndarray | None = None  # (C,) int64: absolute index of bin 0
        self.lo: np.ndarray | None = None  # (C,) float32: data bounds, 0 included
        self.hi: np.ndarray | None = None

    def add(self, rows: np.ndarray, lo: np.ndarray, hi: np.ndarray, finite: np.ndarray | None) -> None:
        """Count ``rows`` (C, N) whose finite bounds per row are ``lo``/``hi``; ``finite`` masks inf/nan.

        Array operations over blocks of the batch (``BLOCK`` values, all channels at once): every value's bin index
        in place in two scratch buffers that stay in the cache, then one ``bincount`` of all the channels' indices
        (offset by channel). Blocks change no count: each value's index is computed alone."""
        channels = rows.shape[0]
        if self.counts is None:
            self.counts = np.zeros((channels, self.bins), dtype=np.int64)
            self.exponent = np.full(channels, _EXP_FLOOR, dtype=np.int64)
            self.start = np.zeros(channels, dtype=np.int64)
            self.lo = np.zeros(channels, dtype=np.float32)
            self.hi = np.zeros(channels, dtype=np.float32)
            self._window()
        if (lo < self.lo).any() or (hi > self.hi).any():  # a row without finite values has lo=+inf, hi=-inf
            self.lo = np.minimum(self.lo, lo)
            self.hi = np.maximum(self.hi, hi)
            self._window()
        # the window holds [lo, hi], so every index lies in 0 .. bins - 1: floor(x / 2**e) - start, each step exact
        # in float32 (small integers) but the multiplication, which rounds as it always did (tiny values)
        inverse, start = self._inverse[:, None], self._start_float[:, None]
        step = max(BLOCK // channels, min(4 * self.bins, BLOCK))
        scaled = np.empty(channels * min(step, rows.shape[1]), dtype=np.float32)
        # int32 indices where they fit: numpy casts float32 to int32 in SIMD, to int64 not (0.5 of 2 ns a value)
        index = np.empty(scaled.size, dtype=np.int32 if channels * self.bins < 2**31 else np.intp)
        offsets = np.arange(channels)[:, None] * self.bins if channels > 1 else None
        negative = bool(self.start.any())  # a window reaching below zero (start 0: lo * inverse is +-0)
        for begin in range(0, rows.shape[1], step):
            block = rows[:, begin:begin + step]
            size = block.shape[1]
            values = scaled[: channels * size].reshape(channels, size)
            if finite is None:
                np.multiply(block, inverse, out=values)
            else:
                np.multiply(np.where(finite[:, begin:begin + step], block, np.float32(0.0)), inverse, out=values)
            if negative:  # else every scaled value is >= 0 (or -0.0): the cast's truncation is the floor
                np.floor(values, out=values)
                np.subtract(values, start, out=values)
            indices = index[: channels * size].reshape(channels, size)
            np.copyto(indices, values, casting="unsafe")
            if offsets is not None:
                indices += offsets
            kept = indices.reshape(-1) if finite is None else indices[finite[:, begin:begin + step]]
            self.counts += np.bincount(kept, minlength=self.counts.size).reshape(channels, self.bins)

    def _window(self) -> None:
        """Widen the bins to hold [lo, hi] (rebinning what was counted) and keep the scaling the blocks use."""
        exponent = np.maximum(self.exponent, self._fitting_exponent())
        inverse = np.ldexp(np.ones(len(exponent), dtype=np.float32), -exponent)
        start = np.floor(self.lo * inverse).astype(np.int64)
        if not (np.array_equal(exponent, self.exponent) and np.array_equal(start, self.start)):
            self._rebin(exponent, start)
        self._inverse, self._start_float = inverse, start.astype(np.float32)

    def _fitting_exponent(self) -> np.ndarray:
        """Smallest width exponent whose window of ``bins`` bins surely holds [lo, hi]; grows with the span."""
        span = self.hi.astype(np.float64) - self.lo.astype(np.float64)
        with np.errstate(divide="ignore"):
            needed = np.ceil(np.log2(span / (self.bins - 2)))  # span >= 0 (0 lies in [lo, hi]): -inf at worst
        return np.maximum(needed, _EXP_FLOOR).astype(np.int64)

    def _rebin(self, exponent: np.ndarray, start: np.ndarray) -> None:
        absolute = self.start[:, None] + np.arange(self.bins)
        shift = np.minimum(exponent - self.exponent, 62)[:, None]
        index = np.clip((absolute >> shift) - start[:, None], 0, self.bins - 1)  # exact: floor(x / 2**e)
        if len(index) > 1:
            index += np.arange(len(index))[:, None] * self.bins
        # float64 sums of integer counts are exact below 2**53 values; 2.5x faster than np.add.at
        counts = np.bincount(index.reshape(-1), weights=self.counts.reshape(-1), minlength=self.counts.size)
        counts = counts.astype(np.int64).reshape(self.counts.shape)
        self.counts, self.exponent, self.start = counts, exponent, start

    def channel(self, c: int) -> ChannelHistogram:
        return ChannelHistogram(
            counts=self.counts[c].astype(np.float64),
            start=int(self.start[c]),
            width=float(np.ldexp(1.0, int(self.exponent[c]))),
            lo=float(self.lo[c]),
            hi=float(self.hi[c]),
        )


class HistogramObserver(Observer):
    """Base of observers that choose a clipping range from a histogram of the data.

    Subclasses implement :meth:`clip` on one channel's :class:`ChannelHistogram`. Small finite batches of one row
    wait in a buffer and are counted together (:data:`GATHERED`): counts do not depend on how data was batched, and
    a count costs the same 50-70 us of small array operations for 1 value as for 4,000.
    """

    def __init__(self, scheme, bins: int = DEFAULT_BINS) -> None:
        super().__init__(scheme)
        self._histogram = RunningHistogram(bins)
        self._waiting: np.ndarray | None = None  # (1, GATHERED) float32, its first _waited values not yet counted
        self._waited = 0

    @property
    def histogram(self) -> RunningHistogram:
        """The histogram of every value observed so far."""
        self._count_waiting()
        return self._histogram

    def _observe_rows(self, rows, lo, hi, finite) -> None:
        size = rows.shape[1]
        if finite is not None or rows.shape[0] != 1 or size > GATHERED // 2:
            self._count_waiting()
            self._histogram.add(rows, lo, hi, finite)
            return
        if self._waited + size > GATHERED:
            self._count_waiting()
        if self._waiting is None:
            self._waiting = np.empty((1, GATHERED), dtype=np.float32)
        self._waiting[:, self._waited:self._waited + size] = rows
        self._waited += size

    def _count_waiting(self) -> None:
        if self._waited:
            rows = self._waiting[:, :self._waited]
            self._histogram.add(rows, *row_bounds(rows), None)
            self._waited = 0

    def clip(self, hist: ChannelHistogram) -> tuple[float, float]:
        raise NotImplementedError

    def range(self) -> tuple[np.ndarray, np.ndarray]:
        bounds = []
        for c in range(self.channels):
            hist = self.histogram.channel(c)
            bounds.append(self.clip(hist) if hist.total else (0.0, 0.0))
        lo, hi = np.array(bounds, dtype=np.float64).T
        return self._shaped(lo), self._shaped(hi)
