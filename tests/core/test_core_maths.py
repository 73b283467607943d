"""Quantization maths: property tests over widths, signedness, symmetry and granularity."""

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qtool.quant import QuantScheme, RoundingPolicy, compute_scale_offset, fake_quantize, quantize_to_codes
from qtool.quant.maths import dequantize_codes, round_to_float_format
from qtool.quant.policy import QuantizationPolicy as P

finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=300, deadline=None)
@given(
    bits=st.integers(1, 16),
    signed=st.booleans(),
    symmetric=st.booleans(),
    lo=finite,
    hi=finite,
    values=st.lists(finite, min_size=1, max_size=32),
)
def test_codes_stay_in_range_and_values_within_half_a_step(bits, signed, symmetric, lo, hi, values):
    scheme = QuantScheme.integer(bits, signed=signed, symmetric=symmetric)
    lo, hi = min(lo, hi), max(lo, hi)
    scale, offset = compute_scale_offset(scheme, lo, hi)
    x = np.array(values, dtype=np.float32)
    codes = quantize_to_codes(x, scheme, scale, offset)
    assert codes.min() >= scheme.quant_min and codes.max() <= scheme.quant_max
    grid_lo = (scheme.quant_min - float(offset)) * float(scale)
    grid_hi = (scheme.quant_max - float(offset)) * float(scale)
    inside = (x >= grid_lo) & (x <= grid_hi)
    deq = dequantize_codes(codes, scheme, scale, offset)
    float32_slack = 4e-7 * np.abs(x[inside])  # codes and values are computed in float32, as ONNX does
    assert np.all(np.abs(deq[inside] - x[inside]) <= float(scale) / 2 * (1 + 1e-5) + float32_slack)
    fq = fake_quantize(torch.from_numpy(x), scheme, scale, offset).numpy()
    np.testing.assert_allclose(fq, deq, rtol=1e-6, atol=float(scale) * 1e-5)
    assert fake_quantize(torch.zeros(3), scheme, scale, offset).abs().max().item() == 0.0


@settings(max_examples=100, deadline=None)
@given(bits=st.integers(2, 16), signed=st.booleans(), symmetric=st.booleans(),
       ranges=st.lists(st.tuples(finite, finite), min_size=1, max_size=6))
def test_per_channel_parameters_are_elementwise(bits, signed, symmetric, ranges):
    lows = np.array([min(a, b) for a, b in ranges], dtype=np.float32)
    highs = np.array([max(a, b) for a, b in ranges], dtype=np.float32)
    per_channel = QuantScheme.integer(bits, signed=signed, symmetric=symmetric, per_channel=True, channel_axis=1)
    per_tensor = QuantScheme.integer(bits, signed=signed, symmetric=symmetric)
    scales, offsets = compute_scale_offset(per_channel, lows, highs)
    x = np.stack([lows, highs, (lows + highs) / 2], axis=0)  # channels on axis 1
    fq = fake_quantize(torch.from_numpy(x), per_channel, scales, offsets).numpy()
    for c in range(len(ranges)):
        s, z = compute_scale_offset(per_tensor, lows[c], highs[c])
        assert s == scales[c] and z == offsets[c]
        expected = fake_quantize(torch.from_numpy(x[:, c].copy()), per_tensor, s, z).numpy()
        np.testing.assert_array_equal(fq[:, c], expected)


def test_asymmetric_zero_point_uses_quant_min_for_signed_ranges():
    signed = QuantScheme.integer(8, signed=True, symmetric=False)
    scale, offset = compute_scale_offset(signed, -1.0, 3.0)
    assert offset == -128 + 64  # quant_min - round(min / scale) = -128 - round(-63.75)
    codes = quantize_to_codes(np.array([-1.0, 0.0, 3.0]), signed, scale, offset)
    assert codes.tolist() == [-128, -64, 127]
    unsigned = QuantScheme.integer(8, signed=False, symmetric=False)
    _, offset_u = compute_scale_offset(unsigned, -1.0, 3.0)
    assert offset_u == offset + 128  # the same grid, shifted codes


@pytest.mark.parametrize(
    "signed, expected_offset, expected_divisor", [(True, 0, 127), (False, 128, 127)]
)
def test_symmetric_zero_point_sits_at_the_centre(signed, expected_offset, expected_divisor):
    scheme = QuantScheme.integer(8, signed=signed, symmetric=True)
    scale, offset = compute_scale_offset(scheme, -2.0, 5.0)
    assert offset == expected_offset
    assert scale == pytest.approx(5.0 / expected_divisor)


def test_power_of_two_scales():
    scheme = QuantScheme.integer(8, power_of_2=True)
    scale, _ = compute_scale_offset(scheme, -3.0, 3.0)
    assert np.log2(scale) == np.round(np.log2(scale)) and scale >= 3.0 / 127


@pytest.mark.parametrize("symmetric", [True, False])
def test_tiny_ranges_keep_their_scale_and_an_empty_range_gets_one(symmetric):
    """Activations of 1e-9 (a randomly initialised EfficientNet's) are quantized on their own scale: every value
    became 0 under the scale 1 that ranges below 2**-32 used to get (output SQNR 0 dB). Only a range without a
    normal float32 scale (ONNX Runtime's limit) gets scale 1."""
    scheme = QuantScheme.integer(8, symmetric=symmetric)
    x = np.array([-2.9e-9, -1e-9, 0.0, 5e-10, 2.4e-9], dtype=np.float32)
    scale, offset = compute_scale_offset(scheme, x.min(), x.max())
    assert 1e-11 < scale < 3e-11
    np.testing.assert_allclose(fake_quantize(x, scheme, scale, offset), x, atol=float(scale) / 2)
    assert compute_scale_offset(scheme, 0.0, 0.0)[0] == 1.0
    assert compute_scale_offset(scheme, -1e-37, 1e-37)[0] == 1.0  # its scale would be below float32's smallest normal


@pytest.mark.parametrize(
    "rounding, expected",
    [
        (RoundingPolicy.HALF_EVEN, [-2, -2, 0, 0, 2, 2]),
        (RoundingPolicy.HALF_UP, [-2, -1, 0, 1, 2, 3]),
        (RoundingPolicy.HALF_DOWN, [-3, -2, -1, 0, 1, 2]),
        (RoundingPolicy.HALF_TOWARD_ZERO, [-2, -1, 0, 0, 1, 2]),
        (RoundingPolicy.HALF_AWAY_FROM_ZERO, [-3, -2, -1, 1, 2, 3]),
        (RoundingPolicy.CEIL, [-2, -1, 0, 1, 2, 3]),
        (RoundingPolicy.FLOOR, [-3, -2, -1, 0, 1, 2]),
    ],
)
def test_rounding_policies_on_ties(rounding, expected):
    scheme = QuantScheme.integer(8, rounding=rounding)
    codes = quantize_to_codes(np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]), scheme, 1.0, 0)
    assert codes.tolist() == expected


@pytest.mark.parametrize(
    "exponent, mantissa, dtype",
    [(4, 3, ml_dtypes.float8_e4m3fn), (5, 2, ml_dtypes.float8_e5m2), (8, 7, ml_dtypes.bfloat16),
     (5, 10, np.float16), (2, 1, ml_dtypes.float4_e2m1fn), (3, 2, ml_dtypes.float6_e3m2fn)],
)
def test_float_rounding_matches_ml_dtypes_inside_the_range(exponent, mantissa, dtype):
    rng = np.random.default_rng(0)
    top = float(ml_dtypes.finfo(dtype).max)
    tiny = float(ml_dtypes.finfo(dtype).smallest_subnormal)
    x = np.concatenate([rng.uniform(-top, top, 2000), rng.normal(0, 1, 2000), rng.uniform(-50, 50, 2000) * tiny,
                        [0.0, top, -top]]).astype(np.float32)
    expected = x.astype(dtype).astype(np.float32)
    got = round_to_float_format(torch.from_numpy(x), exponent, mantissa, top).numpy()
    np.testing.assert_array_equal(got, expected)


def test_float_rounding_saturates():
    got = round_to_float_format(torch.tensor([1e6, -1e6]), 4, 3, 448.0)
    assert got.tolist() == [448.0, -448.0]


def test_fp8_scheme_scale_maps_amax_to_format_max():
    scheme = QuantScheme.floating(4, 3)
    scale, offset = compute_scale_offset(scheme, -3.0, 7.0)
    assert scale == pytest.approx(7.0 / 448) and offset == 0
    y = fake_quantize(torch.tensor([7.0, -3.0, 0.0]), scheme, scale, offset)
    assert y[0].item() == pytest.approx(7.0, rel=1e-6) and y[2].item() == 0.0


def test_blocked_parameters_repeat_along_the_axis():
    scheme = QuantScheme.integer(4, block_size=2, channel_axis=1)
    x = torch.tensor([[0.1, 0.2, 5.0, 6.0, 0.3]])
    scales = np.array([[0.2 / 7, 6.0 / 7, 0.3 / 7]], dtype=np.float32)
    y = fake_quantize(x, scheme, scales, np.zeros_like(scales, dtype=np.int32))
    np.testing.assert_allclose(y.numpy(), x.numpy(), atol=6.0 / 7 / 2 + 1e-6)
    assert abs(y[0, 0].item() - 0.1) <= 0.2 / 14 + 1e-7  # small block keeps a fine step


@pytest.mark.parametrize("rounding", list(RoundingPolicy))
@pytest.mark.parametrize("scheme", [
    QuantScheme.integer(8, signed=False, symmetric=False),
    QuantScheme.integer(4, signed=True, symmetric=True, per_channel=True, channel_axis=0),
    QuantScheme.integer(4, signed=True, symmetric=False, per_channel=True, channel_axis=1, block_size=4),
    QuantScheme.floating(4, 3),
], ids=["u8", "s4-channel", "s4-block", "e4m3"])
def test_numpy_and_torch_fake_quantize_agree_bit_for_bit(scheme, rounding):
    scheme = scheme.with_changes(rounding=rounding)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((6, 10)) * 3).astype(np.float32)
    x[0, :4] = [0.5, 1.5, -2.5, 3.5]  # ties
    channels = x.shape[scheme.channel_axis] if scheme.is_per_channel else None
    if scheme.policy & P.PER_BLOCK:  # one parameter per block: the blocked axis shrinks
        channels = (x.shape[0], -(-x.shape[scheme.channel_axis] // scheme.block_size))
    lo = -np.abs(rng.standard_normal(channels)) * 3 if channels else -4.0
    hi = np.abs(rng.standard_normal(channels)) * 3 if channels else 5.0
    scale, offset = compute_scale_offset(scheme, lo, hi)
    from_numpy = fake_quantize(x, scheme, scale, offset)
    from_torch = fake_quantize(torch.from_numpy(x), scheme, scale, offset).numpy()
    assert isinstance(from_numpy, np.ndarray) and from_numpy.dtype == np.float32
    np.testing.assert_array_equal(from_numpy, from_torch)
    assert not np.array_equal(from_numpy, x)  # it did quantize
