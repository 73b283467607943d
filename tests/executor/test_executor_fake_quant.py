"""The executor's fast integer fake-quantizer gives exactly what ``quant.maths.fake_quantize`` gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from qtool.executor.fake_quant import IntegerQuantizer, make_quantizer
from qtool.quant import QuantScheme, RoundingPolicy, TensorQuantizationConfig, compute_scale_offset, fake_quantize

CHANNELS = 3


@st.composite
def schemes_and_params(draw):
    bits = draw(st.integers(2, 16))
    per_channel = draw(st.booleans())
    scheme = QuantScheme.integer(bits, signed=draw(st.booleans()), symmetric=draw(st.booleans()),
                                 per_channel=per_channel, channel_axis=1 if per_channel else None,
                                 power_of_2=draw(st.booleans()))
    count = CHANNELS if per_channel else 1
    lows = draw(st.lists(st.floats(-1e4, 0, width=32), min_size=count, max_size=count))
    spans = draw(st.lists(st.floats(2.0**-13, 1e4, width=32), min_size=count, max_size=count))
    lo, hi = np.array(lows), np.array(lows) + np.array(spans)
    scale, offset = compute_scale_offset(scheme, lo if per_channel else lo[0], hi if per_channel else hi[0])
    return scheme, scale, offset


@st.composite
def tensors(draw, scale):
    """Normal values, exact ties between two codes, huge values, zeros of both signs, inf and nan."""
    step = float(np.max(scale))
    values = draw(st.lists(st.one_of(
        st.floats(-1e6, 1e6, width=32),
        st.integers(-70000, 70000).map(lambda k: (k + 0.5) * step),
        st.sampled_from([0.0, -0.0, 1e30, -1e30, float("inf"), float("-inf"), float("nan")]),
    ), min_size=2 * CHANNELS * 4, max_size=2 * CHANNELS * 4))
    return torch.tensor(values, dtype=torch.float32).reshape(2, CHANNELS, 4)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_fast_path_equals_fake_quantize(data):
    scheme, scale, offset = data.draw(schemes_and_params())
    x = data.draw(tensors(scale))
    tqc = TensorQuantizationConfig(scheme)
    tqc.set_params(scale, offset)
    quantizer = make_quantizer(tqc, torch.device("cpu"))
    assert isinstance(quantizer, IntegerQuantizer)
    expected = fake_quantize(x, scheme, torch.as_tensor(scale), torch.as_tensor(offset.astype(np.float32)))
    np.testing.assert_array_equal(quantizer(x).numpy(), expected.numpy())


@pytest.mark.parametrize("scheme", [
    QuantScheme.floating(4, 3),
    QuantScheme.integer(32, per_channel=True, channel_axis=0),
    QuantScheme.integer(4, block_size=2, channel_axis=0),
    QuantScheme.integer(8, rounding=RoundingPolicy.HALF_UP),
], ids=["fp8", "int32", "per_block", "half_up"])
def test_other_schemes_go_through_fake_quantize(scheme):
    assert not IntegerQuantizer.handles(scheme)


@pytest.mark.parametrize("dtype,grad", [(torch.float16, False), (torch.float32, True)])
def test_half_precision_and_autograd_fall_back(dtype, grad):
    scheme = QuantScheme.integer(8, symmetric=False)
    tqc = TensorQuantizationConfig(scheme)
    tqc.set_params(*compute_scale_offset(scheme, -2.0, 3.0))
    x = (torch.randn(4, 5) * 3).to(dtype).requires_grad_(grad)
    y = make_quantizer(tqc, torch.device("cpu"))(x)
    assert y.dtype == dtype and y.requires_grad == grad
    np.testing.assert_array_equal(y.detach().numpy(), fake_quantize(x, scheme, tqc.scale, tqc.offset).detach().numpy())
    if grad:
        y.sum().backward()  # the in-place path would have broken autograd
        assert x.grad is not None
