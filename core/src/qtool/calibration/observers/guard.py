"""Spotting ranges that a few huge values (an attention mask, a padding constant) dominate.

A :class:`MagnitudeProfile` keeps, per channel, how many values fall in each
power-of-two magnitude band ``[2**(e-1), 2**e)``. It is fixed in size and fed a
sample of each batch, so it costs little next to the observer itself.
"""

from __future__ import annotations

import numpy as np

from ...quant import QuantScheme

_EXP_MIN, _EXP_MAX = -150, 129  # frexp exponents of nonzero finite float32 values
_BANDS = _EXP_MAX - _EXP_MIN + 1
_BANDS_BELOW = -126 - _EXP_MIN  # band of exponent field f: f + _BANDS_BELOW (frexp exponent f - 126)
_SAMPLE = 1 << 14  # values per channel looked at in one batch, at most (small ops stay single-threaded)
_BLOCKS = 64  # taken as the start of this many blocks spread over the batch
_BULK_BELOW = 5  # the bulk: bands at least 2**5 below the largest magnitude
CRUSHED_LIMIT = 0.25  # warn when more than this share of all values is far below the largest and quantizes to zero


def zero_threshold(scheme: QuantScheme, scale: np.ndarray) -> np.ndarray:
    """Magnitude below which a value quantizes to zero under ``scale``."""
    if scheme.is_floating:
        bias = 2 ** (scheme.exponent_bits - 1) - 1
        return scale * 2.0 ** (1 - bias - scheme.mantissa_bits) / 2
    return scale / 2


def _sample(rows: np.ndarray) -> np.ndarray:
    """At most ``_SAMPLE`` values per row: the start of each of ``_BLOCKS`` equal blocks (cache-friendly)."""
    length = rows.shape[1] // _BLOCKS
    if rows.shape[1] <= _SAMPLE or not rows.flags.c_contiguous:
        return rows[:, :_SAMPLE]
    blocks = rows[:, : length * _BLOCKS].reshape(rows.shape[0], _BLOCKS, length)
    return blocks[:, :, : _SAMPLE // _BLOCKS].reshape(rows.shape[0], -1)


class MagnitudeProfile:
    """Per-channel counts of nonzero finite values by power-of-two magnitude."""

    def __init__(self) -> None:
        self.counts: np.ndarray | None = None  # (C, _BANDS) int64

    def observe(self, rows: np.ndarray) -> None:
        sample = np.ascontiguousarray(_sample(rows))
        channels = sample.shape[0]
        # the band of a normal value is its float32 exponent field (its frexp exponent + 126) + _BANDS_BELOW; the
        # field is 0 for zero and subnormals, 255 for inf and nan, whose counts are dropped
        field = (sample.view(np.uint32) >> np.uint32(23)).astype(np.intp)
        field &= 0xFF
        if channels > 1:
            field += np.arange(channels)[:, None] * 256
        counts = np.bincount(field.reshape(-1), minlength=channels * 256).reshape(channels, 256)
        bands = np.zeros((channels, _BANDS), dtype=np.int64)
        bands[:, 1 + _BANDS_BELOW:255 + _BANDS_BELOW] = counts[:, 1:255]
        if counts[:, 0].sum() > np.count_nonzero(sample == 0):  # subnormals (rare): frexp finds their bands
            channel, position = np.nonzero((sample != 0) & (np.abs(sample) < np.finfo(np.float32).tiny))
            _, exponent = np.frexp(np.abs(sample[channel, position]))
            np.add.at(bands, (channel, exponent - _EXP_MIN), 1)
        self.counts = bands if self.counts is None else self.counts + bands

    def crushed_fractions(self, scheme: QuantScheme, scale: np.ndarray) -> tuple[float, float] | None:
        """Shares of the nonzero values that quantize to zero: of all of them, and of those in the bulk (far below
        the largest). A band partly below the zero threshold counts by the part below it (log-uniform)."""
        if self.counts is None:
            return None
        counts = self.counts.astype(np.float64)
        total = counts.sum()
        if not total:
            return None
        exponents = np.arange(_EXP_MIN, _EXP_MAX + 1)  # band e holds magnitudes in [2**(e-1), 2**e)
        top = np.where(counts.any(axis=1), _EXP_MIN + _BANDS - 1 - np.argmax(counts[:, ::-1] > 0, axis=1), _EXP_MIN)
        bulk = exponents[None, :] <= (top - _BULK_BELOW)[:, None]
        threshold = np.broadcast_to(zero_threshold(scheme, np.asarray(scale, dtype=np.float64)), top.shape)
        with np.errstate(divide="ignore"):
            below = np.clip(np.log2(threshold)[:, None] - (exponents[None, :] - 1), 0.0, 1.0)
        crushed = counts * below
        return float(crushed.sum() / total), float(crushed[bulk].sum() / total)

    def diagnose(self, scheme: QuantScheme, scale: np.ndarray) -> str | None:
        """A warning when most values sit far below the largest and quantize to zero (a few huge values, or a
        peaked distribution, set the range). Coarse grids (2 or 4 bits) zero many ordinary values too; that alone
        is not reported."""
        fractions = self.crushed_fractions(scheme, scale)
        if fractions is None or fractions[1] <= CRUSHED_LIMIT:
            return None
        return (f"{fractions[0]:.0%} of its nonzero values quantize to zero with scale {float(np.max(scale)):.3g}: "
                "most of its values lie far below its largest ones (a mask or padding constant, or a peaked "
                "distribution such as attention probabilities); more bits would keep them")
