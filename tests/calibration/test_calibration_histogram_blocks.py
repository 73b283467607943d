"""RunningHistogram.add counts block by block: the block size changes no count, exponent, start nor bound.

One block larger than every batch is the whole-batch computation (the histogram before blocks); the batches
below are built to find any difference: values on bin edges, -0.0, subnormals that round in the float32 scaling,
the window's ends, widening between batches, inf/nan, per-channel rows that are views of another layout.
"""

from __future__ import annotations

import numpy as np
import pytest
from qtool.calibration import make_observer
from qtool.calibration.observers import histogram
from qtool.quant import QuantScheme

PER_TENSOR = QuantScheme.integer(8, signed=False, symmetric=False)
PER_CHANNEL = QuantScheme.integer(8, signed=True, symmetric=True, per_channel=True, channel_axis=1)
TINY = np.float32(np.finfo(np.float32).smallest_subnormal)


def _edges(rng: np.random.Generator, size: int) -> np.ndarray:
    """Values on and just beside the edges of power-of-two bins, of both signs, with zeros and subnormals."""
    width = np.float32(2.0) ** rng.integers(-10, 4, size).astype(np.float32)
    k = rng.integers(-2100, 2100, size).astype(np.float32)
    on = k * width
    beside = np.nextafter(on, np.where(rng.random(size) < 0.5, -np.inf, np.inf).astype(np.float32))
    special = np.array([0.0, -0.0, TINY, -TINY, 3 * TINY, -3 * TINY, np.finfo(np.float32).tiny,
                        -np.finfo(np.float32).tiny], dtype=np.float32)
    return np.concatenate([on, beside, special]).astype(np.float32)


def _batches(seed: int) -> list[np.ndarray]:
    """(4, 3, n) batches whose range widens (the first ones tiny: subnormal products), with inf/nan in some."""
    rng = np.random.default_rng(seed)
    batches = []
    for scale in (1e-38, 1e-3, 1.0, 0.5, 300.0, 2.0**20):
        x = (_edges(rng, 600) * np.float32(scale)).astype(np.float32)
        x = rng.permutation(np.resize(x, 4 * 3 * 61)).reshape(4, 3, 61).astype(np.float32)
        batches.append(x)
    masked = batches[3].copy()
    masked.reshape(-1)[rng.integers(0, masked.size, 40)] = np.array([np.inf, -np.inf, np.nan, np.nan] * 10,
                                                                    dtype=np.float32)
    masked[:, 1, :] = np.nan  # a channel without finite values in this batch
    batches.insert(4, masked)
    batches.append(np.full((4, 3, 5), np.nan, dtype=np.float32))  # nothing finite at all
    return batches


def _state(scheme: QuantScheme, batches: list[np.ndarray], block: int, monkeypatch) -> tuple:
    monkeypatch.setattr(histogram, "BLOCK", block)
    observer = make_observer("percentile", scheme)
    for x in batches:
        observer.observe(x)
    h = observer.histogram
    return (observer.count, observer.nonfinite, h.counts, h.exponent, h.start, h.lo, h.hi,
            observer.profile.counts)


@pytest.mark.parametrize("scheme", [PER_TENSOR, PER_CHANNEL], ids=["per-tensor", "per-channel"])
@pytest.mark.parametrize("block", [1, 7, 64, 1000])
def test_blocks_count_what_one_whole_batch_block_counts(scheme, block, monkeypatch):
    batches = _batches(0)
    whole = _state(scheme, batches, 1 << 30, monkeypatch)
    blocked = _state(scheme, batches, block, monkeypatch)
    for ours, theirs in zip(blocked, whole, strict=True):
        assert np.asarray(ours).dtype == np.asarray(theirs).dtype
        np.testing.assert_array_equal(ours, theirs)
    first = _state(scheme, batches[:1], 1 << 30, monkeypatch)
    assert whole[1] > 0 and (first[3] < whole[3] - 20).all()  # the batches held inf/nan and widened the bins


@pytest.mark.parametrize("first", ["mixed", "nonnegative"])
def test_every_value_lands_in_the_bin_of_its_float32_scaling(first):
    """Independent of the implementation: bin floor(x * 2**-e) - start, the product rounded in float32. A window
    that starts at zero (values >= 0 and -0.0 so far) takes a shorter path until negative values widen it."""
    rng = np.random.default_rng(1)
    x = _edges(rng, 5000) * np.float32(0.01)
    if first == "nonnegative":
        x[: x.size // 2] = np.where(x[: x.size // 2] > 0, x[: x.size // 2], np.float32(-0.0))
    observer = make_observer("percentile", PER_TENSOR)
    observer.observe(x[: x.size // 2])
    observer.observe(x * np.float32(8))  # widens: the first batch is rebinned
    observer.observe(x[x.size // 2:])
    h = observer.histogram
    inverse = np.float32(np.ldexp(1.0, -int(h.exponent[0])))
    values = np.concatenate([x[: x.size // 2], x * np.float32(8), x[x.size // 2:]]).astype(np.float32)
    expected = np.bincount((np.floor(values * inverse) - h.start[0]).astype(np.int64), minlength=h.bins)
    np.testing.assert_array_equal(h.counts[0], expected)


def test_the_magnitude_profile_counts_each_nonzero_finite_value_in_its_power_of_two_band():
    from qtool.calibration.observers.guard import MagnitudeProfile

    rng = np.random.default_rng(2)
    x = rng.permutation(np.concatenate([_edges(rng, 3000) * np.float32(1e-30), _edges(rng, 3000),
                                        np.array([np.inf, -np.inf, np.nan, 3e38, -3e38], dtype=np.float32)]))
    profile = MagnitudeProfile()
    profile.observe(x.reshape(1, -1))
    kept = np.abs(x[np.isfinite(x) & (x != 0)]).astype(np.float64)
    band = np.floor(np.log2(kept)).astype(np.int64) + 1 + 150  # [2**(e-1), 2**e) is band e - _EXP_MIN
    np.testing.assert_array_equal(profile.counts[0], np.bincount(band, minlength=profile.counts.shape[1]))


@pytest.mark.parametrize("block", [1, 7, 64, 1 << 15])
def test_row_bounds_by_blocks_are_the_rows_min_and_max(block, monkeypatch):
    """Blocks of columns change no bound: a nan in any block propagates, rows may be views of another layout."""
    from qtool.calibration.observers import base

    monkeypatch.setattr(base, "BOUNDS_BLOCK", block)
    x = np.concatenate(_batches(1)[:5], axis=2)  # (4, 3, n): inf and nan in the fifth
    for rows in (x.reshape(1, -1), np.moveaxis(x, 1, 0).reshape(3, -1), x[:, :2, :].reshape(8, -1)):
        lo, hi = base.row_bounds(rows)
        np.testing.assert_array_equal(lo, rows.min(axis=1))
        np.testing.assert_array_equal(hi, rows.max(axis=1))
        assert lo.dtype == hi.dtype == np.float32
    rows = x[:, :1, :200].reshape(1, -1).copy()
    rows[0, -1] = np.nan  # in the last block only
    assert np.isnan(base.row_bounds(rows)[0]).all() and np.isnan(base.row_bounds(rows)[1]).all()


@pytest.mark.parametrize("scheme", [PER_TENSOR, QuantScheme.integer(4), QuantScheme.integer(8, per_channel=True,
                                                                                          channel_axis=0)],
                         ids=["uint8", "int4", "int8-per-channel"])
@pytest.mark.parametrize("block", [1, 100, 1 << 30])
def test_candidate_blocks_change_no_squared_error(scheme, block, monkeypatch):
    """MSE and auto compute an integer scheme's candidate errors a block of candidates at a time: any block size
    gives the errors (and so the ranges) of all candidates at once."""
    from qtool.calibration.observers import mse

    rng = np.random.default_rng(2)
    x = np.concatenate([rng.standard_normal(5000), rng.standard_normal(50) * 40]).astype(np.float32)
    observer = make_observer("auto", scheme)
    observer.observe(x.reshape(1, -1))  # one channel: per tensor, or per channel on axis 0
    hist = observer.histogram.channel(0)
    lo, hi = hist.lo * np.linspace(0.05, 1, 40), hist.hi * np.linspace(0.05, 1, 40)
    whole = mse.histogram_error(hist, scheme, mse.rows_scheme(scheme), lo, hi)
    monkeypatch.setattr(mse, "_BLOCK_VALUES", block)
    np.testing.assert_array_equal(mse.histogram_error(hist, scheme, mse.rows_scheme(scheme), lo, hi), whole)
    assert make_observer("auto", scheme).clip(hist) == observer.clip(hist)


@pytest.mark.parametrize("scheme", [PER_TENSOR, QuantScheme.integer(4), QuantScheme.integer(8, signed=False,
                                                                                          symmetric=False)],
                         ids=["uint8", "int4", "uint8-asymmetric"])
def test_integer_errors_are_those_of_fake_quantize(scheme, monkeypatch):
    """The integer schemes' fast path squares the errors of fake-quantizing each point, bit for bit."""
    from qtool.calibration.observers import mse
    from qtool.quant import compute_scale_offset, fake_quantize

    rng = np.random.default_rng(5)
    x = np.concatenate([rng.standard_normal(5000) - 0.7, rng.standard_normal(50) * 30]).astype(np.float32)
    observer = make_observer("mse", scheme)
    observer.observe(x.reshape(1, -1))
    hist = observer.histogram.channel(0)
    lo, hi = hist.lo * np.linspace(0.05, 1, 40), hist.hi * np.linspace(0.05, 1, 40)
    squared = []
    monkeypatch.setattr(mse, "_weighted_sums", lambda error, weights: squared.append(error.copy()) or error @ weights)
    monkeypatch.setattr(mse, "_BLOCK_VALUES", 5000)  # a few candidates a block
    mse.histogram_error(hist, scheme, mse.rows_scheme(scheme), lo, hi)
    used = np.flatnonzero(hist.counts)
    inside = (np.arange(mse._POINTS) + 0.5) / mse._POINTS
    values = (((hist.start + used)[:, None] + inside) * hist.width).reshape(-1)
    scale, offset = compute_scale_offset(scheme, lo, hi)
    grid = np.broadcast_to(values, (len(lo), values.size))
    expected = (grid - fake_quantize(grid, mse.rows_scheme(scheme), scale, offset)) ** 2
    assert len(squared) > 1  # several blocks of candidates
    np.testing.assert_array_equal(np.concatenate(squared), expected)
