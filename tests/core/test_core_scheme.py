"""QuantScheme validation, float formats and the TQC parameter sources."""

import ml_dtypes
import numpy as np
import pytest

from qtool.quant import QuantizationPolicy as P
from qtool.quant import QuantizationState, QuantScheme, TensorQuantizationConfig, float_format_max


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(bits=0), "1 to 16"),
        (dict(bits=17), "1 to 16"),
        (dict(bits=31), "1 to 16"),
        (dict(bits=8, quant_min=-200, quant_max=100), "does not fit 8 bits"),
        (dict(bits=8, quant_min=0, quant_max=300), "does not fit 8 bits"),
        (dict(bits=8, quant_min=5, quant_max=100), "contain 0"),
        (dict(bits=8, quant_min=10, quant_max=-10), "below quant_max"),
        (dict(bits=8, per_channel=True), "channel_axis"),
        (dict(bits=4, block_size=0, channel_axis=0), "block_size"),
    ],
)
def test_invalid_integer_schemes_name_the_field(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        QuantScheme.integer(**kwargs)


def test_int8_asymmetric_with_signed_range_is_valid():
    scheme = QuantScheme.integer(8, signed=True, symmetric=False)
    assert (scheme.quant_min, scheme.quant_max) == (-128, 127)
    assert scheme.policy == P.ASYMMETRICAL | P.PER_TENSOR | P.LINEAR
    assert scheme.short() == "int8 asym per-tensor [-128, 127]"


def test_floating_formats_are_named_as_users_know_them():
    assert [QuantScheme.floating(e, m).short() for e, m in ((4, 3), (5, 2), (5, 10), (8, 7))] == \
        ["fp8 e4m3", "fp8 e5m2", "fp16 e5m10", "bf16 e8m7"]
    # with its granularity where it is not per tensor (explain showed an fp8 weight of blocks as 'fp8 e4m3')
    per_channel = QuantScheme.floating(4, 3).with_changes(policy=P.FLOATING | P.SYMMETRICAL | P.PER_CHANNEL,
                                                          channel_axis=0)
    assert per_channel.short() == "fp8 e4m3 per-channel(axis=0)"


def test_every_width_and_signedness_builds():
    for bits in range(1, 17):
        for signed in (True, False):
            scheme = QuantScheme.integer(bits, signed=signed, symmetric=False)
            assert scheme.quant_max - scheme.quant_min == 2**bits - 1


def test_schemes_are_frozen():
    scheme = QuantScheme.integer(8)
    with pytest.raises(AttributeError):
        scheme.num_of_bits = 4
    assert scheme.with_changes(num_of_bits=4, quant_min=-8, quant_max=7).num_of_bits == 4


@pytest.mark.parametrize(
    "exponent, mantissa, dtype",
    [(4, 3, ml_dtypes.float8_e4m3fn), (5, 2, ml_dtypes.float8_e5m2), (8, 7, ml_dtypes.bfloat16),
     (5, 10, np.float16), (2, 1, ml_dtypes.float4_e2m1fn), (3, 2, ml_dtypes.float6_e3m2fn),
     (2, 3, ml_dtypes.float6_e2m3fn)],
)
def test_float_format_max_matches_ml_dtypes(exponent, mantissa, dtype):
    assert float_format_max(exponent, mantissa) == float(ml_dtypes.finfo(dtype).max)


def test_floating_scheme_validation():
    fp8 = QuantScheme.floating(4, 3)
    assert fp8.num_of_bits == 8 and fp8.mantissa_bits == 3 and fp8.quant_max == 448
    with pytest.raises(ValueError, match="POWER_OF_2"):
        QuantScheme(P.SYMMETRICAL | P.PER_TENSOR | P.FLOATING | P.POWER_OF_2, 8, -448, 448, exponent_bits=4)
    with pytest.raises(ValueError, match="no room"):
        QuantScheme(P.SYMMETRICAL | P.PER_TENSOR | P.FLOATING, 4, -1, 1, exponent_bits=4)


def test_tqc_overlap_follows_the_dominator_and_rejects_cycles():
    scheme = QuantScheme.integer(8)
    producer, reader = TensorQuantizationConfig(scheme), TensorQuantizationConfig(scheme)
    producer.set_params(0.5, 0)
    reader.overlap(producer)
    assert reader.state is QuantizationState.OVERLAPPED and reader.dominator is producer
    producer.set_params(0.25, 0)  # recalibration propagates
    assert float(reader.scale) == 0.25
    with pytest.raises(ValueError, match="cycle"):
        producer.overlap(reader)


def test_tqc_passive_rule_is_evaluated_on_read():
    scheme = QuantScheme.integer(8)
    s_in, s_w = TensorQuantizationConfig(scheme), TensorQuantizationConfig(scheme, role="weight")
    s_in.set_params(0.1, 0)
    s_w.set_params(np.array([0.5, 0.25]), np.array([0, 0]))
    bias = TensorQuantizationConfig(QuantScheme.integer(32), role="bias")
    bias.make_passive(lambda: (s_in.scale * s_w.scale, np.zeros(2, dtype=np.int32)))
    np.testing.assert_allclose(bias.scale, [0.05, 0.025], rtol=1e-6)
    s_in.set_params(0.2, 0)
    np.testing.assert_allclose(bias.scale, [0.1, 0.05], rtol=1e-6)
    assert bias.is_settled and bias.is_passive
