"""The seed scenarios: a few-line config file gives exactly the expected schemes per op."""

from __future__ import annotations

import pytest
from qtool.config import resolve_config
from qtool.quant import QuantizationPolicy as P
from qtool.quant import QuantScheme

BASE = """
[weight]
bits = 8
symmetric = true
granularity = "per_channel"

[bias]
mode = "int32"

[fusion]
remove_activations = false
"""

INT8_ASYM = """
[activation]
bits = 8
symmetric = false
quant_min = -128
quant_max = 127
"""

UINT8_ASYM = """
[activation]
bits = 8
signed = false
symmetric = false
"""

INT16_SYM = """
[activation]
bits = 16
"""

W4 = """
[weight]
bits = 4
"""


def _weight(bits: int, axis: int) -> QuantScheme:
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return QuantScheme(P.SYMMETRICAL | P.PER_CHANNEL | P.LINEAR, bits, lo, hi, channel_axis=axis)


ASYM = P.ASYMMETRICAL | P.PER_TENSOR | P.LINEAR
SCENARIOS = {
    "int8-asym": (BASE + INT8_ASYM, QuantScheme(ASYM, 8, -128, 127, observer="auto"), 8),
    "uint8-asym": (BASE + UINT8_ASYM, QuantScheme(ASYM, 8, 0, 255, observer="auto"), 8),
    "w4": (BASE.replace("bits = 8", "bits = 4") + INT8_ASYM, QuantScheme(ASYM, 8, -128, 127, observer="auto"), 4),
    "int16": (BASE + INT16_SYM, QuantScheme(P.SYMMETRICAL | P.PER_TENSOR | P.LINEAR, 16, -32768, 32767,
                                      observer="auto"), 8),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_seed_scenario_schemes_per_op(name, small_graph, write_config):
    text, activation, weight_bits = SCENARIOS[name]
    config = resolve_config({}, write_config(text))
    ops = small_graph.operations
    assert config.scheme_for(ops["conv"], "weight", tensor="conv.w") == _weight(weight_bits, 0)
    assert config.scheme_for(ops["fc"], "weight", tensor="fc.w") == _weight(weight_bits, 0)  # transB=1
    assert config.scheme_for(ops["head.matmul"], "weight", tensor="head.w") == _weight(weight_bits, 1)
    for op in ("conv", "fc", "head.matmul"):
        assert config.scheme_for(ops[op], "activation", tensor=ops[op].inputs[0].name) == activation
    assert config.bias_mode_for(ops["conv"]) == "int32"
    assert not config.remove_activations and "Relu" in config.fusion_activations


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_seed_scenario_same_in_yaml_and_json(suffix, small_graph, write_config):
    data = {"weight": {"bits": 4, "symmetric": True, "granularity": "per_channel"}, "bias": {"mode": "int32"},
            "activation": {"bits": 8, "signed": False, "symmetric": False}}
    config = resolve_config({}, write_config(data, suffix))
    assert config == resolve_config({}, data)
    conv = small_graph.operations["conv"]
    assert config.scheme_for(conv, "weight") == _weight(4, 0)
    assert config.scheme_for(conv, "activation") == QuantScheme(ASYM, 8, 0, 255, observer="auto")


def test_seed_scenario_as_override_of_w4(small_graph, write_config):
    config = resolve_config({}, write_config(BASE + INT8_ASYM + '[[override]]\nop_type = "Conv"\n'
                                             "weight = { bits = 4 }\n"))
    ops = small_graph.operations
    assert config.scheme_for(ops["conv"], "weight") == _weight(4, 0)
    assert config.scheme_for(ops["fc"], "weight") == _weight(8, 0)


def test_gemm_without_transb_uses_axis_1(small_graph):
    fc = small_graph.operations["fc"]
    fc.attributes["transB"] = 0
    assert resolve_config({}, None).scheme_for(fc, "weight").channel_axis == 1
