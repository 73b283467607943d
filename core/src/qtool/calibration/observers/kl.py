"""The entropy (KL divergence) observer, after TensorRT's int8 calibration.

On the histogram of ``|x|``, each candidate threshold keeps the first ``i``
bins (the clipped tail piles onto the last one: distribution P) and merges
them into as many buckets as the scheme has levels on one side (Q, spread back
evenly over the nonzero bins). The threshold with the smallest KL(P || Q) wins.
All candidates are evaluated from prefix sums, a block of them at a time.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import CalibrationError
from .histogram import DEFAULT_BINS, ChannelHistogram, HistogramObserver

_EMPTY_BUCKET = 1e-4  # count given to a bucket of Q that the clipped tail alone fills in P
_CANDIDATES_PER_BLOCK = 256  # about as many rows of the (candidates, levels) arrays computed at once


def _xlogx(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0)), 0.0)


def entropy_threshold(counts: np.ndarray, levels: int) -> int:
    """How many leading bins of the ``|x|`` histogram ``counts`` to keep (``levels`` .. len)."""
    n = counts.size
    if n <= levels:
        return n
    total = counts.sum()
    cumulative = np.concatenate([[0.0], np.cumsum(counts)])  # cumulative[i] = sum(counts[:i])
    nonzero = np.concatenate([[0.0], np.cumsum(counts > 0, dtype=np.float64)])
    plogp_prefix = np.concatenate([[0.0], np.cumsum(_xlogx(counts))])
    keep = np.arange(levels, n + 1)  # candidates (K,)
    tail = total - cumulative[keep]
    last = counts[keep - 1] + tail  # P's last bin: the kept one plus the clipped tail
    plogp = plogp_prefix[keep - 1] + _xlogx(last)
    cross = _cross_terms(cumulative, nonzero, counts, keep, tail)
    kept = cumulative[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        divergence = (plogp - cross + total * np.log(kept)) / total - math.log(total)
    divergence = np.where(kept > 0, divergence, np.inf)
    return int(keep[np.argmin(divergence)])


def _cross_terms(cumulative, nonzero, counts, keep, tail) -> np.ndarray:
    """For each candidate, the sum over buckets of P's mass times log(Q): the ``(K, levels)`` arrays are computed
    a block of candidates at a time, in buffers reused from block to block, so that they stay in the CPU's cache."""
    levels = int(keep[0])
    cross = np.empty(keep.size)
    block = min(keep.size, levels * max(1, _CANDIDATES_PER_BLOCK // levels))  # a multiple of levels, or all
    edges = _bucket_edges(keep[:block], levels)
    step = np.arange(levels + 1) * (block // levels)  # edges of candidate i + block: those of i plus step
    gathered, sums, filled = np.empty((block, levels + 1)), np.empty((block, levels)), np.empty((block, levels))
    for start in range(0, keep.size, block):
        rows = slice(start, start + block)
        size = len(keep[rows])  # the last block may be shorter
        edges, gathered, sums, filled = edges[:size], gathered[:size], sums[:size], filled[:size]
        if start:
            edges += step
        np.take(cumulative, edges, mode="clip", out=gathered)
        np.subtract(gathered[:, 1:], gathered[:, :-1], out=sums)  # counts kept per bucket
        np.take(nonzero, edges, mode="clip", out=gathered)
        np.subtract(gathered[:, 1:], gathered[:, :-1], out=filled)  # nonzero bins per bucket (exact integers)
        filled[:, -1] += (counts[keep[rows] - 1] == 0) & (tail[rows] > 0)
        # Q per bucket, spread evenly over its nonzero bins, as log(count): fmax also turns an empty bucket's 0/0
        with np.errstate(invalid="ignore"):
            log_q = np.divide(sums, filled, out=filled)
        np.log(np.fmax(log_q, _EMPTY_BUCKET, out=log_q), out=log_q)
        # the tail adds to the last bucket's mass
        cross[rows] = np.einsum("kl,kl->k", sums, log_q) + tail[rows] * log_q[:, -1]
    return cross


def _bucket_edges(keep: np.ndarray, levels: int) -> np.ndarray:
    """``ceil(j * i / levels)`` for every candidate ``i`` in ``keep`` (rows) and ``j`` in 0..levels (columns):
    bin ``b`` of candidate ``i`` falls in bucket ``b * levels // i``."""
    edges = np.arange(levels + 1)[None, :] * keep[:, None]
    edges += levels - 1
    if levels & (levels - 1) == 0:  # a power of two (the usual 128 or 256 levels): a shift, not a division
        edges >>= levels.bit_length() - 1
    else:
        edges //= levels
    return edges


class EntropyObserver(HistogramObserver):
    """Threshold minimizing the KL divergence between the data and its quantized form."""

    name = "kl"

    def __init__(self, scheme, bins: int = DEFAULT_BINS) -> None:
        super().__init__(scheme, bins)
        if scheme.is_floating:
            raise CalibrationError(f"observer 'kl' models evenly spaced integer levels; {scheme.short()} is a "
                                   "floating format: use 'mse', 'percentile' or 'minmax'")

    def levels(self, hist: ChannelHistogram) -> int:
        """Quantization levels on one side of zero, where the threshold applies."""
        qmin, qmax = self.scheme.quant_min, self.scheme.quant_max
        if self.scheme.is_symmetric:
            return int(qmax - math.ceil((qmin + qmax) / 2)) + 1
        codes = int(qmax - qmin) + 1
        return codes if hist.lo == 0 or hist.hi == 0 else codes // 2

    def clip(self, hist: ChannelHistogram) -> tuple[float, float]:
        kept = entropy_threshold(hist.magnitudes(), self.levels(hist))
        amax = min(kept * hist.width, max(-hist.lo, hist.hi))
        if self.scheme.is_symmetric:
            return -amax, amax
        return max(hist.lo, -amax), min(hist.hi, amax)
