"""The entropy (KL divergence) observer, after TensorRT's int8 calibration.

On the histogram of ``|x|``, each candidate threshold keeps the first ``i``
bins (the clipped tail piles onto the last one: distribution P) and merges
them into as many buckets as the scheme has levels on one side (Q, spread back
evenly over the nonzero bins). The threshold with the smallest KL(P || Q) wins.
The first bin counts as many values as the second, as in TensorRT's calibrator:
the zeros a ReLU writes (half its values) would otherwise be most of P.
All candidates are evaluated from prefix sums, a block of them at a time;
buckets that many candidates share are computed once.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from ..errors import CalibrationError
from .histogram import DEFAULT_BINS, ChannelHistogram, HistogramObserver

_EMPTY_BUCKET = 1e-4  # count given to a bucket of Q that the clipped tail alone fills in P
_CANDIDATES_PER_BLOCK = 256  # about as many rows of the (candidates, levels) arrays computed at once
_TABLE_ENTRIES = 1 << 18  # most (width, first bin) buckets computed at once (2 MB per array; 4096 bins need 140K)


def _xlogx(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0)), 0.0)


def entropy_threshold(counts: np.ndarray, levels: int) -> int:
    """How many leading bins of the ``|x|`` histogram ``counts`` to keep (``levels`` .. len)."""
    if counts.size <= levels:
        return counts.size
    keep, divergence = _divergences(counts, levels)
    return int(keep[np.argmin(divergence)])


def _divergences(counts: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """The candidate thresholds ``levels .. len(counts)`` and KL(P || Q) of each."""
    n = counts.size
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
    return keep, np.where(kept > 0, divergence, np.inf)


def _cross_terms(cumulative, nonzero, counts, keep, tail) -> np.ndarray:
    """For each candidate, the sum over buckets of P's mass times log(Q): of every bucket but the last from
    :func:`_bucket_blocks`, summed row by row, then the last, which the clipped tail joins, per candidate. Each
    product and each sum is the same whichever way :func:`_bucket_blocks` finds the buckets, so the divergences
    agree bit for bit."""
    levels = int(keep[0])
    first = ((levels - 1) * keep + levels - 1) // levels  # the last bucket's bins: first .. i - 1
    last_mass = cumulative[keep] - cumulative[first]
    filled = nonzero[keep] - nonzero[first] + ((counts[keep - 1] == 0) & (tail > 0))  # and the tail's bin
    last_log_q = _log_q(last_mass, filled)
    cross = np.empty(keep.size)
    for rows, terms in _bucket_blocks(cumulative, nonzero, keep):
        np.sum(terms, axis=1, out=cross[rows])
    cross += (last_mass + tail) * last_log_q  # the tail adds to the last bucket's mass
    return cross


def _bucket_blocks(cumulative, nonzero, keep):
    """Yields ``rows`` (a slice of ``keep``) and mass times log(Q) of every bucket but the last of those
    candidates (an array ``(rows, levels - 1)``), a block of candidates at a time, in buffers reused from block to
    block so that they stay in the CPU's cache.

    A bucket is a run of bins given by its width and first bin, and with many levels candidates share most of
    them (a width is the floor or the ceiling of ``i / levels``): then the product of every (width, first bin)
    pair is computed once and gathered (one gather a bucket); otherwise each block's are computed from the prefix
    sums."""
    levels, n = int(keep[0]), cumulative.size - 1
    block = min(keep.size, levels * max(1, _CANDIDATES_PER_BLOCK // levels))  # a multiple of levels, or all
    m = block // levels  # candidate i + block: bucket j starts j * m bins later and is m bins wider
    index = _bucket_edges(keep[:block], levels)[:, :levels]  # where the buckets' numbers are read: their edges in
    # the prefix sums,
    widest = -(-n // levels)
    table = (widest + 1) * (n + 1)
    shared = table < keep.size * levels // 2 and table <= _TABLE_ENTRIES  # far fewer buckets than pairs
    if shared:
        products = _bucket_table(cumulative, nonzero, widest)
        index = (n + 1) * index[:, 1:] - n * index[:, :-1]  # or its entry in the table: width * (n + 1) + first
        step = np.arange(levels - 1) * m + m * (n + 1)
    else:
        step = np.arange(levels) * m
        gathered, mass = np.empty((block, levels)), np.empty((block, levels - 1))
    terms = np.empty((block, levels - 1))
    for start in range(0, keep.size, block):
        rows = slice(start, start + block)
        size = len(keep[rows])  # the last block may be shorter
        index, terms = index[:size], terms[:size]
        if start:
            index += step
        if shared:
            np.take(products, index, mode="clip", out=terms)
        else:
            np.take(cumulative, index, mode="clip", out=gathered[:size])
            np.subtract(gathered[:size, 1:], gathered[:size, :-1], out=mass[:size])
            np.take(nonzero, index, mode="clip", out=gathered[:size])
            log_q = _log_q(mass[:size], np.subtract(gathered[:size, 1:], gathered[:size, :-1], out=terms))
            np.multiply(mass[:size], log_q, out=terms)
        yield rows, terms


def _bucket_table(cumulative, nonzero, widest: int) -> np.ndarray:
    """Mass times log(Q) of the bucket of each width 0 .. ``widest`` (rows) from each bin 0 .. n (columns),
    flattened: entry ``width * (n + 1) + first``. Buckets reaching past the last bin are never used."""
    mass, filled = _run_sums(cumulative, widest), _run_sums(nonzero, widest)
    return np.multiply(mass, _log_q(mass, filled), out=filled).reshape(-1)  # in place: one table alive, not three


def _run_sums(prefix: np.ndarray, widest: int) -> np.ndarray:
    """``prefix[first + width] - prefix[first]`` for each width 0 .. ``widest`` (rows) and first bin (columns),
    ``prefix``'s last value standing for those past its end."""
    ends = np.concatenate([prefix, np.full(widest, prefix[-1])])
    return np.lib.stride_tricks.sliding_window_view(ends, prefix.size) - prefix  # row w: ends[w:w + n + 1]


def _log_q(mass: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """log(Q), in place of ``filled``, of buckets holding ``mass`` over ``filled`` nonzero bins (exact integers):
    Q spreads the mass evenly over them, and fmax also turns an empty bucket's 0/0 into the floor."""
    with np.errstate(invalid="ignore"):
        q = np.divide(mass, filled, out=filled)
    return np.log(np.fmax(q, _EMPTY_BUCKET, out=q), out=q)


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


def _zeros_levelled(counts: np.ndarray) -> np.ndarray:
    """``counts`` with its first bin (exact zeros and the smallest magnitudes) given the second's count. Counted as
    they are, a ReLU output's zeros are half of P, and every threshold that keeps them looks alike: KL clipped a
    small ResNet's ReLU outputs to a quarter of their range (digits top-1 0.628 with ``kl`` everywhere, 0.986
    levelled, as float)."""
    if counts.size < 2:
        return counts
    levelled = counts.astype(np.float64)  # a copy
    levelled[0] = levelled[1]
    return levelled


class EntropyObserver(HistogramObserver):
    """Threshold minimizing the KL divergence between the data and its quantized form."""

    name = "kl"
    levels_zeros: ClassVar[bool] = True  # the first bin counted as the second (:func:`_zeros_levelled`)

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
        counts = hist.magnitudes()
        kept = entropy_threshold(_zeros_levelled(counts) if self.levels_zeros else counts, self.levels(hist))
        amax = min(kept * hist.width, max(-hist.lo, hist.hi))
        if self.scheme.is_symmetric:
            return -amax, amax
        return max(hist.lo, -amax), min(hist.hi, amax)
