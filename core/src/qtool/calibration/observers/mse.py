"""The MSE observer: the clipping range with the least quantization error on the histogram."""

from __future__ import annotations

import numpy as np

from ...quant import compute_scale_offset, fake_quantize
from ...quant.policy import QuantizationPolicy as P
from ...quant.policy import RoundingPolicy
from ..errors import CalibrationError
from .histogram import DEFAULT_BINS, ChannelHistogram, HistogramObserver

_POINTS = 8  # evaluation points per bin: bins may be as wide as a quantization step
_SHORTLIST = 8  # candidates measured with every point, after a ranking on one point per bin
_BLOCK_VALUES = 1 << 16  # (candidate, point) pairs an integer scheme's errors compute at once: 768 KiB of buffers,
# where all 128 candidates of a dense histogram took 6 MiB, kept by the heap (all at once were no faster)


class MSEObserver(HistogramObserver):
    """Tries ``candidates`` ranges ``(k/K) * [lo, hi]`` and keeps the one with the least squared error.

    The error of each candidate is computed by fake-quantizing points spread
    evenly inside each nonzero bin with the scheme itself (any integer or
    floating format, rounding included), weighted by the counts. Every
    candidate is first ranked on the bin centres alone; the best
    ``_SHORTLIST`` are then measured on all the points. Ties go to the wider
    range.
    """

    name = "mse"
    option = "candidates"

    def __init__(self, scheme, candidates: int = 128, bins: int = DEFAULT_BINS) -> None:
        super().__init__(scheme, bins)
        if int(candidates) < 1:
            raise CalibrationError(f"observer 'mse': candidates must be >= 1, got {candidates}")
        self.candidates = int(candidates)
        self._rows_scheme = rows_scheme(scheme)

    def clip(self, hist: ChannelHistogram) -> tuple[float, float]:
        fractions = np.arange(1, self.candidates + 1) / self.candidates
        lo, hi = hist.lo * fractions, hist.hi * fractions
        shortlist = np.arange(self.candidates)
        if self.candidates > _SHORTLIST:  # rank every candidate on bin centres, then measure the best few exactly
            rough = histogram_error(hist, self.scheme, self._rows_scheme, lo, hi, points=1)
            shortlist = np.sort(np.argsort(rough, kind="stable")[:_SHORTLIST])
        error = histogram_error(hist, self.scheme, self._rows_scheme, lo[shortlist], hi[shortlist])
        best = shortlist[len(shortlist) - 1 - int(np.argmin(error[::-1]))]
        return float(lo[best]), float(hi[best])


def rows_scheme(scheme):
    """``scheme`` made per-channel on axis 0, to evaluate one candidate range per row (a block's included)."""
    granularity = P.PER_TENSOR | P.PER_CHANNEL | P.PER_BLOCK
    return scheme.with_changes(policy=(scheme.policy & ~granularity) | P.PER_CHANNEL, channel_axis=0, block_size=None)


def histogram_error(hist: ChannelHistogram, scheme, rows, lo: np.ndarray, hi: np.ndarray,
                    points: int = _POINTS) -> np.ndarray:
    """Squared quantization error of the histogram's values for each candidate range ``[lo[k], hi[k]]``.

    ``points`` points spread evenly inside each nonzero bin are fake-quantized with the
    scheme itself (any integer or floating format, rounding included), weighted
    by the bin counts. ``rows`` is :func:`rows_scheme` of ``scheme``.
    """
    used = np.flatnonzero(hist.counts)
    inside = (np.arange(points) + 0.5) / points
    values = (((hist.start + used)[:, None] + inside) * hist.width).reshape(-1)
    weights = np.repeat(hist.counts[used], points)
    scale, offset = compute_scale_offset(scheme, lo, hi)
    if scheme.is_floating or scheme.rounding is not RoundingPolicy.HALF_EVEN:
        values = np.broadcast_to(values, (len(lo), values.size))
        return _weighted_sums((values - fake_quantize(values, rows, scale, offset)) ** 2, weights)
    step = max(1, _BLOCK_VALUES // max(1, values.size))  # candidates a block computes (each row stands alone)
    return np.concatenate([_integer_error(values, weights, scheme, scale[k:k + step], offset[k:k + step])
                           for k in range(0, len(lo), step)])


def _integer_error(points: np.ndarray, weights: np.ndarray, scheme, scale: np.ndarray,
                   offset: np.ndarray) -> np.ndarray:
    """:func:`histogram_error` for one block of candidates of an integer scheme with ties to even: the float32
    arithmetic of :func:`qtool.quant.fake_quantize`, in place on one (candidates, points) buffer."""
    s = scale.astype(np.float32).reshape(-1, 1)
    z = offset.astype(np.float32).reshape(-1, 1)
    codes = points.astype(np.float32) / s
    np.round(codes, out=codes)
    codes += z
    np.clip(codes, scheme.quant_min, scheme.quant_max, out=codes)
    codes -= z
    codes *= s
    error = codes.astype(np.float64)
    error -= points
    np.square(error, out=error)
    return _weighted_sums(error, weights)


def _weighted_sums(error: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``error @ weights``, row by row in one order (no BLAS: equal rows give equal sums, on one thread)."""
    return np.einsum("kp,p->k", error, weights)
