"""Observers against ranges computed by hand on known data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qtool.calibration import CalibrationError, make_observer
from qtool.calibration.observers import DEFAULT_BINS, entropy_threshold, kl
from qtool.calibration.observers.histogram import GATHERED
from qtool.quant import QuantScheme, compute_scale_offset, fake_quantize

INT8 = QuantScheme.integer(8)
UINT8_ASYM = QuantScheme.integer(8, signed=False, symmetric=False)
FP8 = QuantScheme.floating(4, 3)
HISTOGRAM_OBSERVERS = ["percentile", "kl", "mse"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def observed(name: str, scheme: QuantScheme, x: torch.Tensor, batch: int | None = None, **options):
    observer = make_observer(name, scheme, **options)
    for part in (x.split(batch) if batch else [x]):
        observer.observe(part)
    return observer


def mse(x: torch.Tensor, scheme: QuantScheme, scale, offset) -> float:
    return float(((x - fake_quantize(x, scheme, scale, offset)) ** 2).mean())


# -- minmax ------------------------------------------------------------------------------------
def test_minmax_asymmetric_by_hand():
    x = torch.tensor([-1.0, 0.5, 3.0])
    scale, offset = observed("minmax", QuantScheme.integer(8, symmetric=False), x).compute()
    assert scale == pytest.approx(4 / 255) and offset == -128 + 64  # zp = -128 - round(-1 / (4/255))


def test_minmax_per_channel_on_axis_1():
    x = torch.arange(3.0).reshape(1, 3, 1) + 1  # channel c holds values in [-(c+1), 2(c+1)]
    x = torch.cat([-x, 2 * x], dim=2).expand(4, 3, 2)
    observer = observed("minmax", QuantScheme.integer(8, per_channel=True, channel_axis=1), x)
    lo, hi = observer.range()
    np.testing.assert_array_equal(lo, [-1, -2, -3])
    np.testing.assert_array_equal(hi, [2, 4, 6])
    np.testing.assert_allclose(observer.compute()[0], np.array([2, 4, 6]) / 127, rtol=1e-6)


def test_minmax_fp8_e4m3_scale_is_amax_over_448():
    scale, offset = observed("minmax", FP8, torch.tensor([-7.0, 2.0, 5.0])).compute()
    assert scale == pytest.approx(7 / 448) and offset == 0


def test_a_channel_count_change_is_an_error():
    observer = observed("minmax", QuantScheme.integer(8, per_channel=True, channel_axis=1), torch.zeros(2, 3))
    with pytest.raises(CalibrationError, match="4 channels after 3"):
        observer.observe(torch.zeros(2, 4))


def test_per_block_schemes_are_refused():
    with pytest.raises(CalibrationError, match="per-block"):
        make_observer("minmax", QuantScheme.integer(4, channel_axis=1, block_size=32))


@pytest.mark.parametrize("name", ["minmax", *HISTOGRAM_OBSERVERS])
def test_inf_and_nan_are_ignored_and_reported(name):
    x = torch.linspace(-2, 2, 1001)
    x[::100] = torch.inf
    x[1] = torch.nan
    observer = observed(name, INT8, x)
    lo, hi = observer.range()
    assert np.isfinite(lo) and np.isfinite(hi) and hi <= 2.0
    assert observer.diagnose(observer.compute()[0]) == ["12 inf/nan value(s) were ignored"]


def test_compute_before_any_value_is_an_error():
    with pytest.raises(CalibrationError, match="before it saw"):
        make_observer("minmax", INT8).compute()


# -- percentile --------------------------------------------------------------------------------
def test_percentile_of_a_uniform_ramp():
    x = torch.arange(100_000, dtype=torch.float32) / 1000  # uniform on [0, 100)
    observer = observed("percentile", INT8, x, percentile=99.0)
    lo, hi = observer.range()
    width = observer.histogram.channel(0).width
    assert hi == pytest.approx(np.percentile(x.numpy(), 99.0), abs=width) and lo == -hi


def test_asymmetric_percentile_clips_each_side():
    x = torch.from_numpy(np.random.default_rng(0).normal(3.0, 1.0, 200_000).astype(np.float32))
    observer = observed("percentile", QuantScheme.integer(8, symmetric=False), x, percentile=99.5)
    lo, hi = observer.range()
    width = observer.histogram.channel(0).width
    want_lo, want_hi = np.percentile(x.numpy(), [0.5, 99.5])
    assert lo == pytest.approx(want_lo, abs=width) and hi == pytest.approx(want_hi, abs=width)


def test_percentile_spec_string_and_bounds():
    assert make_observer("percentile:99.9", INT8).percentile == 99.9
    with pytest.raises(CalibrationError, match=r"\(50, 100\]"):
        make_observer("percentile", INT8, percentile=20)


# -- kl ------------------------------------------------------------------------------------------
def test_kl_clips_gaussian_outliers_below_the_max():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, 200_000), [60.0, -55.0, 58.0]]).astype(np.float32)
    lo, hi = observed("kl", INT8, torch.from_numpy(x)).range()
    assert 2.5 < hi < 15 and lo == -hi


def test_kl_keeps_the_whole_range_of_uniform_data():
    x = torch.linspace(-1, 1, 100_001)
    _, hi = observed("kl", INT8, x).range()
    assert hi > 0.95


def test_kl_keeps_the_tail_of_a_relu_output_whose_zeros_are_half_its_values():
    """The zeros count as their neighbouring bin does (TensorRT's calibrator too): counted whole, they made KL clip a
    ReLU'd normal at 2.0 of its 4.7 (2.3 % of the positive values clipped)."""
    x = np.maximum(np.random.default_rng(0).normal(0, 1, 200_000), 0).astype(np.float32)
    lo, hi = observed("kl", UINT8_ASYM, torch.from_numpy(x)).range()
    assert lo == 0 and 3.5 < hi <= x.max()


def test_entropy_threshold_by_hand():
    assert entropy_threshold(np.ones(100), 128) == 100  # fewer bins than levels: keep all
    # A spike in the last bin costs more divergence when clipped than kept: keep everything.
    counts = np.r_[np.full(255, 10.0), 1000.0]
    assert entropy_threshold(counts, 128) == 256
    # A decaying bulk and one far outlier: resolving the bulk beats keeping the outlier.
    counts = np.r_[np.round(1000 * np.exp(-np.arange(128) / 20)), np.zeros(800), [1.0]]
    assert 128 <= entropy_threshold(counts, 128) < 200
    # A flat bulk loses nothing when merged (Q spreads evenly), so nothing needs clipping.
    counts = np.r_[np.full(128, 1000.0), np.zeros(800), [1.0]]
    assert entropy_threshold(counts, 128) == 929


def reference_divergences(counts: np.ndarray, levels: int) -> dict[int, float]:
    """KL(P || Q) per candidate, one candidate at a time, bin by bin (the plain definition)."""
    total = counts.sum()
    divergences = {}
    for i in range(levels, counts.size + 1):
        p = counts[:i].copy()
        p[-1] += counts[i:].sum()  # the clipped tail piles onto the last kept bin
        bucket = np.arange(i) * levels // i
        q = np.zeros(i)
        for b in range(levels):
            members = (bucket == b) & (p > 0)
            if members.any():  # the bucket's kept counts, spread evenly over its nonzero bins of P
                q[members] = max(counts[:i][bucket == b].sum() / members.sum(), 1e-4)
        kept = counts[:i].sum()
        if kept == 0:
            divergences[i] = np.inf
            continue
        used = p > 0
        divergences[i] = float(np.sum(p[used] / total * np.log((p[used] / total) / (q[used] / kept))))
    return divergences


def varied_histograms(rng: np.random.Generator):
    sizes = [(levels, bins) for levels in (2, 3, 4, 5, 8) for bins in (levels, levels + 1, 2 * levels + 3, 40)]
    # many levels: buckets shared by candidates are computed once (in one block of candidates, and in several)
    for levels, bins in sizes + [(16, 40), (32, 400)]:
        yield rng.integers(0, 50, bins).astype(float), levels
        sparse = np.where(rng.random(bins) < 0.3, rng.integers(1, 500, bins), 0).astype(float)
        sparse[rng.integers(bins)] += 1  # never all zero (observers skip empty histograms)
        yield sparse, levels
        tailed = np.zeros(bins)
        tailed[: max(1, bins // 3)] = rng.integers(100, 1000, max(1, bins // 3))  # bulk, gap, far outliers
        tailed[-1], tailed[bins // 2] = 1, 2
        yield tailed, levels
        yield np.r_[np.zeros(bins - 1), 7.0], levels  # a single bin
        yield rng.random(bins) * 10, levels  # fractional counts
        yield np.full(bins, 3.0), levels


def test_entropy_threshold_matches_a_plain_per_candidate_loop():
    for counts, levels in varied_histograms(np.random.default_rng(0)):
        chosen = entropy_threshold(counts, levels)
        if counts.size <= levels:
            assert chosen == counts.size
            continue
        reference = reference_divergences(counts, levels)
        best = min(reference, key=reference.get)  # the first of equal minima, as np.argmin
        # the same candidate, or one whose divergence equals the minimum up to float rounding
        assert chosen == best or reference[chosen] == pytest.approx(reference[best], rel=1e-9, abs=1e-12), \
            (counts.tolist(), levels, chosen, best)


def test_kl_shared_buckets_give_the_divergences_of_per_block_buckets_bit_for_bit(monkeypatch):
    """Buckets computed once for all candidates and gathered give the very numbers of computing each candidate's
    buckets (so the chosen threshold does not depend on the path, even between near-equal candidates)."""
    rng = np.random.default_rng(3)
    bulk = rng.poisson(rng.gamma(0.5, 200, 3000))
    counts = np.r_[bulk, np.zeros(1000), rng.integers(0, 3, 96)].astype(float)  # a bulk, a gap, a sparse tail
    for levels in (128, 200, 256):
        shared = kl._divergences(counts, levels)[1]
        with monkeypatch.context() as patch:
            patch.setattr(kl, "_TABLE_ENTRIES", 0)  # no table: every block computes its own buckets
            direct = kl._divergences(counts, levels)[1]
        np.testing.assert_array_equal(shared.view(np.int64), direct.view(np.int64))


def test_kl_unsigned_levels_use_the_whole_code_range():
    x = torch.rand(10_000)
    observer = observed("kl", UINT8_ASYM, x)
    assert observer.levels(observer.histogram.channel(0)) == 256
    assert observed("kl", INT8, x).levels(observer.histogram.channel(0)) == 128


def test_kl_refuses_floating_formats():
    with pytest.raises(CalibrationError, match="floating format"):
        make_observer("kl", FP8)


# -- mse -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", [INT8, QuantScheme.integer(8, symmetric=False), QuantScheme.integer(4), FP8],
                         ids=lambda s: s.short())
def test_mse_finds_the_best_clip_on_heavy_tails(scheme):
    x = torch.from_numpy(np.random.default_rng(0).standard_t(3, 50_000).astype(np.float32))
    chosen = mse(x, scheme, *observed("mse", scheme, x).compute())
    widest = mse(x, scheme, *observed("minmax", scheme, x).compute())
    lo, hi = float(x.min()), float(x.max())
    exhaustive = min(mse(x, scheme, *compute_scale_offset(scheme, k / 128 * lo, k / 128 * hi)) for k in range(1, 129))
    assert chosen <= 1.02 * exhaustive  # the histogram estimate finds the best range on the raw data
    if not scheme.is_floating:  # fp8 keeps its precision over a wide range: clipping rarely pays
        assert chosen < widest


def test_mse_keeps_the_range_of_uniform_data():
    x = torch.linspace(0, 1, 50_001)
    lo, hi = observed("mse", UINT8_ASYM, x).range()
    assert lo == 0 and hi > 0.97


# -- the shared histogram -----------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", HISTOGRAM_OBSERVERS)
@pytest.mark.parametrize("per_channel", [False, True])
def test_batch_size_does_not_change_the_result(name, per_channel, device):
    torch.manual_seed(0)
    spread = torch.logspace(-3, 2, 64)[:, None, None, None]  # later samples widen the range: many re-binnings
    x = (torch.randn(64, 4, 8, 8) * spread + 0.3).to(device)
    scheme = QuantScheme.integer(8, signed=False, symmetric=False, per_channel=per_channel,
                                 channel_axis=1 if per_channel else None)
    one, sixteen = observed(name, scheme, x, batch=1), observed(name, scheme, x, batch=16)
    np.testing.assert_array_equal(one.histogram.counts, sixteen.histogram.counts)
    for a, b in zip(one.range(), sixteen.range(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert isinstance(one.histogram.counts, np.ndarray)  # a tensor on any device is read into numpy


def test_rebinning_equals_one_histogram_of_all_the_data():
    rng = np.random.default_rng(3)
    parts = [torch.from_numpy(rng.normal(0, s, 1000).astype(np.float32)) for s in (0.01, 0.1, 1, 10, 100)]
    growing = observed("percentile", INT8, torch.cat(parts), batch=1000)
    at_once = observed("percentile", INT8, torch.cat(parts))
    np.testing.assert_array_equal(growing.histogram.counts, at_once.histogram.counts)
    hist = at_once.histogram.channel(0)
    edges = (hist.start + np.arange(hist.counts.size + 1)) * hist.width
    np.testing.assert_array_equal(hist.counts, np.histogram(torch.cat(parts).numpy(), edges)[0])


def test_small_batches_gathered_count_as_one_histogram_of_all_the_data():
    """Small batches wait in a bounded buffer; one with inf/nan, a large one and a read in between count it first."""
    rng = np.random.default_rng(5)
    parts = [rng.normal(0, s, n).astype(np.float32) for s, n in ((1, 300), (4, 2000), (0.5, 9000), (2, 1500))]
    parts[1][7] = np.inf
    gathered = make_observer("auto", INT8)
    for i, part in enumerate(parts):
        gathered.observe(part)
        if i == 2:
            assert int(gathered.histogram.counts.sum()) == 300 + 1999 + 9000  # a read counts what waited
    whole = make_observer("auto", INT8)
    whole.observe(np.concatenate(parts))
    np.testing.assert_array_equal(gathered.histogram.counts, whole.histogram.counts)
    assert gathered.range() == whole.range()
    assert gathered._waiting.size == GATHERED


def test_histogram_memory_does_not_grow_with_batches():
    observer = make_observer("kl", INT8)
    for i in range(100):
        observer.observe(torch.randn(256) * (i + 1))
    state = observer.histogram
    assert state.counts.shape == (1, DEFAULT_BINS) and int(state.counts.sum()) == 100 * 256
    assert state.exponent.shape == state.start.shape == (1,)


def test_bins_option_and_minimum():
    assert make_observer("mse", INT8, bins=512).histogram.bins == 512
    with pytest.raises(CalibrationError, match="at least 16 bins"):
        make_observer("mse", INT8, bins=8)


# -- the dominated-range guard ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["minmax", "percentile", "mse"])
def test_a_huge_mask_value_is_reported(name):
    x = torch.randn(64, 64)
    x[:, 32:] = -3.4e38  # half the scores masked with float32's lowest value
    observer = observed(name, INT8, x)
    warnings = observer.diagnose(observer.compute()[0])
    assert len(warnings) == 1 and "quantize to zero" in warnings[0]


@pytest.mark.parametrize("name", ["minmax", "percentile", "kl", "mse"])
def test_ordinary_data_raises_no_warning(name):
    x = torch.relu(torch.randn(128, 256))
    observer = observed(name, UINT8_ASYM, x)
    assert observer.diagnose(observer.compute()[0]) == []


def test_fp8_zeroing_is_judged_with_the_format_subnormals():
    x = torch.cat([torch.randn(10_000), torch.tensor([1e9])])
    observer = observed("minmax", FP8, x)  # scale 1e9/448: values near 1 fall below the smallest subnormal
    assert observer.diagnose(observer.compute()[0])
    observer = observed("minmax", FP8, torch.cat([torch.randn(10_000), torch.tensor([100.0])]))
    assert observer.diagnose(observer.compute()[0]) == []


@pytest.mark.parametrize("bits", [2, 4])
def test_the_zero_share_is_the_measured_one_and_coarse_grids_alone_raise_nothing(bits):
    from qtool.quant import QuantScheme

    scheme = QuantScheme.integer(bits)
    x = torch.randn(1, 1 << 14)
    observer = observed("minmax", scheme, x)
    scale = observer.compute()[0]
    measured = float((torch.round(x / torch.as_tensor(scale, dtype=torch.float32)) == 0).float().mean())
    overall, _ = observer.profile.crushed_fractions(scheme, scale)
    assert abs(overall - measured) < 0.05
    assert observer.diagnose(scale) == []


def test_a_masked_tensor_reports_the_true_share():
    x = torch.randn(1, 1 << 14)
    x[:, : 1 << 12] = -1e9  # a quarter masked: three quarters of the values quantize to zero
    observer = observed("minmax", INT8, x)
    (warning,) = observer.diagnose(observer.compute()[0])
    assert warning.startswith("75% of its nonzero values quantize to zero")
