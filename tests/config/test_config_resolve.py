"""Merging layers, presets, overrides, dispatch decisions and the resolved QuantConfig."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from qtool.config import PRESETS, ConfigError, check_against_graph, resolve_config
from qtool.quant import QuantizationPolicy as P


def _act(config, graph, op="conv", tensor=None):
    return config.scheme_for(graph.operations[op], "activation", tensor)


def _wt(config, graph, op="conv", tensor=None):
    return config.scheme_for(graph.operations[op], "weight", tensor)


def test_merge_order_platform_then_preset_then_user(small_graph, write_config):
    platform = {"activation": {"observer": "percentile", "bits": 16}, "bias": {"mode": "float"}}
    path = write_config("preset = 'w8a8-u8'\n[weight]\nbits = 4\n")
    config = resolve_config(platform, path)
    act = _act(config, small_graph)
    assert (act.num_of_bits, act.quant_min, act.quant_max, act.observer) == (8, 0, 255, "percentile")
    assert _wt(config, small_graph).quant_max == 7
    assert config.bias_mode == "float" and config.preset == "w8a8-u8"
    assert config.origins["activation.observer"] == "platform defaults"
    assert config.origins["activation.signed"] == "preset 'w8a8-u8'"
    assert config.origins["weight.bits"] == str(path)


def test_preset_argument_wins_over_the_files_preset(small_graph, write_config):
    config = resolve_config({}, write_config("preset = 'w8a8-u8'\n"), preset="a16w8")
    assert config.preset == "a16w8" and _act(config, small_graph).num_of_bits == 16


def test_platform_preset_applies_when_the_user_names_none(small_graph):
    assert _wt(resolve_config({"preset": "w4a8"}), small_graph).num_of_bits == 4


def test_tables_merge_deeply_and_lists_replace():
    platform = {"dispatch": {"exclude": ["a*"], "passive_op_types": ["Reshape"]},
                "override": [{"op_type": "Conv", "keep_float": True}]}
    config = resolve_config(platform, {"dispatch": {"exclude": ["b*"]},
                                       "override": [{"op_type": "Gemm", "weight": {"bits": 4}}]})
    assert config.exclude == ("b*",) and config.passive_op_types == {"Reshape"}
    assert [o.pattern for o in config.overrides] == ["Gemm"]


@pytest.mark.parametrize("preset, user, expected", [
    ("w8a8-u8", {"bits": 16}, (16, 0, 65535)),  # bits keeps signed, drops the inherited range
    ("w8a8-u8", {"quant_min": -128, "quant_max": 127}, (8, -128, 127)),  # a range drops inherited signed
    ("a16w8", {"format": "fp8_e4m3"}, (8, -448.0, 448.0)),  # a named format drops inherited bits
    ("w8a8-asym", {"signed": False}, (8, 0, 255)),
])
def test_a_key_drops_the_inherited_keys_it_resets(preset, user, expected, small_graph):
    act = _act(resolve_config({}, {"activation": user}, preset=preset), small_graph)
    assert (act.num_of_bits, act.quant_min, act.quant_max) == expected


def test_granularity_drops_an_inherited_axis(small_graph):
    config = resolve_config({"weight": {"axis": 1}}, {"weight": {"granularity": "per_tensor"}})
    assert _wt(config, small_graph).policy & P.PER_TENSOR


@pytest.mark.parametrize("fmt, bits, top", [("fp8_e4m3", 8, 448.0), ("fp8_e5m2", 8, 57344.0), ("fp16", 16, 65504.0),
                                            ("bf16", 16, 3.3895313892515355e38), ("fp4_e2m1", 4, 6.0)])
def test_named_float_formats(fmt, bits, top, small_graph):
    act = _act(resolve_config({}, {"activation": {"format": fmt}}), small_graph)
    assert act.is_floating and act.num_of_bits == bits and act.quant_max == top and act.quant_min == -top


def test_float_format_from_widths(small_graph):
    config = resolve_config({}, {"activation": {"format": "float", "exponent_bits": 3, "bits": 6}})
    act = _act(config, small_graph)
    assert (act.exponent_bits, act.mantissa_bits, act.quant_max) == (3, 2, 28.0)


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_through_to_dict_and_a_yaml_file(name, write_config):
    config = resolve_config({}, None, preset=name)
    assert resolve_config({}, config.to_dict()) == config
    assert resolve_config({}, write_config(config.to_dict(), ".yaml")) == config
    assert resolve_config({}, config) == config  # an earlier result's .config, passed back as it is


def test_to_dict_round_trips_overrides_and_float(write_config):
    user = {"activation": "float", "weight": {"bits": 4, "rounding": "half_up"},
            "dispatch": {"exclude": ["head.*"], "include": ["head.matmul"]},
            "override": [{"op_type": "Conv", "activation": {"bits": 8}, "bias": {"mode": "float"}},
                         {"tensor": "g", "keep_float": True}, {"op_name": "f*", "weight": "float"}]}
    config = resolve_config({}, user)
    data = config.to_dict()
    assert data["activation"] == "float" and data["override"] == user["override"]
    assert resolve_config({}, yaml.safe_load(yaml.safe_dump(data))) == config


def test_float_activations_and_an_override_that_quantizes_them(small_graph):
    config = resolve_config({}, {"activation": "float",
                                 "override": [{"op_type": "Conv", "activation": {"bits": 16}}]})
    assert _act(config, small_graph, "fc") is None
    assert _act(config, small_graph, "conv").num_of_bits == 16


def test_later_overrides_win_and_merge_over_earlier_ones(small_graph):
    config = resolve_config({}, {"override": [
        {"op_name": "*", "weight": {"bits": 4, "rounding": "floor"}},
        {"op_type": "Conv", "weight": {"bits": 6}},
    ]})
    conv, fc = _wt(config, small_graph, "conv"), _wt(config, small_graph, "fc")
    assert (conv.num_of_bits, conv.rounding.value) == (6, "floor")
    assert (fc.num_of_bits, fc.rounding.value) == (4, "floor")


def test_tensor_overrides_apply_only_to_that_tensor(small_graph):
    config = resolve_config({}, {"override": [{"tensor": "r", "activation": {"bits": 16}},
                                              {"tensor": "f", "keep_float": True}]})
    assert _act(config, small_graph, "relu", "r").num_of_bits == 16
    assert _act(config, small_graph, "relu", "c").num_of_bits == 8
    assert _act(config, small_graph, "fc", "f") is None
    assert not config.is_excluded(small_graph.operations["fc"])


def test_set_by_user_tells_the_users_keys_from_the_platforms_and_a_presets(small_graph):
    """What a platform may change (a granularity it knows its runtime cannot run) and what it must leave."""
    conv = small_graph.operations["conv"]
    weight = conv.inputs[1].name
    platform = {"weight": {"granularity": "per_channel"}}

    def by_user(user=None, preset=None, tensor=weight):
        return resolve_config(platform, user, preset=preset).set_by_user(conv, "weight", tensor, "granularity")

    assert not by_user() and not by_user(preset="w8a8")
    assert by_user({"weight": {"granularity": "per_channel"}})
    assert by_user({"override": [{"tensor": weight, "weight": {"granularity": "per_tensor"}}]})
    assert not by_user({"override": [{"tensor": "another", "weight": {"granularity": "per_tensor"}}]})
    assert not by_user({"weight": {"bits": 4}})  # the user's table, not this key
    assert not resolve_config(platform).set_by_user(conv, "bias", weight, "granularity")


def test_keep_float_op_override(small_graph):
    config = resolve_config({}, {"override": [{"op_type": "Gemm", "keep_float": True}]})
    fc = small_graph.operations["fc"]
    assert config.is_excluded(fc) and config.scheme_for(fc, "weight") is None
    assert config.bias_mode_for(fc) == "float"
    assert config.quantize_decision(fc) == (False, "kept float by config: override[0]")


def test_exclude_include_and_quantize_op_types(small_graph):
    ops = small_graph.operations
    config = resolve_config({}, {"dispatch": {"exclude": ["head.*", "co*"], "include": ["conv", "flatten"]}})
    assert config.quantize_decision(ops["head.matmul"]) == (False, "excluded by dispatch.exclude 'head.*'")
    assert config.quantize_decision(ops["conv"]) == (True, "included by dispatch.include 'conv'")
    assert config.quantize_decision(ops["flatten"]) == (True, "included by dispatch.include 'flatten'")
    assert config.quantize_decision(ops["fc"]) == (True, "Gemm is in dispatch.quantize_op_types")
    assert config.quantize_decision(ops["relu"]) == (False, "Relu is not in dispatch.quantize_op_types")
    assert _act(config, small_graph, "head.matmul") is None and _act(config, small_graph, "conv") is not None


def test_bias_override(small_graph):
    config = resolve_config({}, {"override": [{"op_name": "fc", "bias": {"mode": "float"}}]})
    assert config.bias_mode_for(small_graph.operations["fc"]) == "float"
    assert config.bias_mode_for(small_graph.operations["conv"]) == "int32"


def test_axes_per_channel_activation_block_and_fallback(small_graph):
    ops = small_graph.operations
    config = resolve_config({}, {"activation": {"granularity": "per_channel"},
                                 "weight": {"granularity": "per_block", "block_size": 32}})
    assert _act(config, small_graph).channel_axis == 1
    block = _wt(config, small_graph, "fc")
    assert block.policy & P.PER_BLOCK and (block.channel_axis, block.block_size) == (0, 32)
    assert config.scheme_for(ops["conv"], "weight", channel_axis=2).channel_axis == 2
    add = dataclasses.replace(ops["relu"], op_type="Add", name="add")
    assert config.scheme_for(add, "weight").policy & P.PER_TENSOR  # no natural axis
    explicit = resolve_config({}, {"weight": {"axis": 1}})
    assert _wt(explicit, small_graph, "conv").channel_axis == 1


def test_matmul_with_the_weight_first_uses_its_rows(small_graph):
    op = small_graph.operations["head.matmul"]
    op.inputs.reverse()
    assert _wt(resolve_config({}, None), small_graph, "head.matmul", "head.w").channel_axis == 0


def test_observer_defaults_and_validation(small_graph):
    config = resolve_config({}, {"calibration": {"observer": "percentile:99.9"}})
    assert _act(config, small_graph).observer == "percentile:99.9" and _wt(config, small_graph).observer == "minmax"
    with pytest.raises(ConfigError, match=r"config: weight\.observer: unknown observer 'msee'; did you mean 'mse'"):
        resolve_config({}, {"weight": {"observer": "msee"}})
    with pytest.raises(ConfigError, match=r"config: override\[0\]: activation\.observer: unknown observer 'kll'"):
        resolve_config({}, {"override": [{"op_type": "Conv", "activation": {"observer": "kll"}}]})


@pytest.mark.parametrize("layer, where", [({"weight": {"observer": "kl"}}, "config: weight.observer"),
                                          ({"override": [{"op_type": "Conv", "weight": {"observer": "percentile"}}]},
                                           r"config: override\[0\]: weight.observer")])
def test_weights_take_minmax_or_mse_only(small_graph, layer, where):
    """Weight ranges come from ParameterQuantize, which knows minmax and mse: another observer was ignored."""
    with pytest.raises(ConfigError, match=rf"{where}: observer '\w+' applies to activations only; weights take "
                                          r"minmax or mse"):
        resolve_config({}, layer)
    assert _wt(resolve_config({}, {"weight": {"observer": "mse:50"}}), small_graph).observer == "mse:50"


def test_alignment_groups():
    config = resolve_config({}, {"alignment": {"add": "none"}})
    assert config.alignment_for("Concat") == "output" and config.alignment_for("Sub") == "none"
    assert config.alignment_for("Conv") is None


def test_config_is_frozen():
    config = resolve_config({}, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.bias_mode = "float"
    with pytest.raises(TypeError):
        config.weight["bits"] = 4


def test_describe_summarises_every_part():
    text = resolve_config({}, {"override": [{"op_type": "Conv", "weight": {"bits": 4}}]}, preset="w8a8-u8").describe()
    assert "activation: uint8 asym per-tensor [0, 255]" in text
    assert "weight: int8 sym per-channel(axis=natural)" in text
    assert "override[0] op_type = 'Conv': weight {'bits': 4}  (config: override[0])" in text


def test_check_against_graph_reports_matchers_that_match_nothing(small_graph, write_config):
    path = write_config("""
        [dispatch]
        exclude = ["head.*", "tail.*"]
        [[override]]
        op_type = "Conv"
        weight = { bits = 4 }
        [[override]]
        op_type = "LSTM"
        keep_float = true
        [[override]]
        tensor = "nothing"
        activation = "float"
        [[override]]
        op_name = "blk*"
        keep_float = true
    """)
    warnings = check_against_graph(resolve_config({}, path), small_graph)
    assert warnings == [
        f"{path}: override[1]: op_type = 'LSTM' matches nothing in the model",
        f"{path}: override[2]: tensor = 'nothing' matches nothing in the model",
        f"{path}: override[3]: op_name = 'blk*' matches nothing in the model",
        f"{path}: dispatch.exclude: 'tail.*' matches no op name in the model",
    ]
