"""[weight_only] and the int4/int8 weight-only presets: float activations, weights blocked along the input axis."""

from __future__ import annotations

import pytest
from qtool.config import ConfigError, resolve_config
from qtool.pipeline import plan as plan_for
from qtool.platform import get_platform
from qtool.quant import QuantizationPolicy as P
from qtool.testing.decoder import tiny_decoder


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    return tiny_decoder(tmp_path_factory.mktemp("wo") / "decoder.onnx")


def _weights(plan):
    return {op.name: next(t for t in op.quant.inputs if t is not None).scheme
            for op in plan.graph.topological_order() if op.quant is not None and op.quant.quantized}


@pytest.mark.parametrize("preset, bits, symmetric", [("int4-weight-only", 4, False), ("int8-weight-only", 8, True)])
def test_presets_block_every_weight_along_its_input_axis(decoder, preset, bits, symmetric):
    plan = plan_for(decoder, "onnxruntime", preset=preset)
    schemes = _weights(plan)
    assert set(schemes) == {"embed", "block0.up", "block0.down", "block1.up", "block1.down", "head"}
    axes = {name: s.channel_axis for name, s in schemes.items()}
    # Gather table [V, D]: each row; MatMul [K, N]: rows; Gemm transB [N, K]: columns
    assert axes == {"embed": 1, "block0.up": 0, "block0.down": 1, "block1.up": 0, "block1.down": 1, "head": 0}
    for name, scheme in schemes.items():  # the embedding table at embedding_bits (default 8)
        assert scheme.policy & P.PER_BLOCK and scheme.block_size == 32
        assert scheme.num_of_bits == (8 if name == "embed" else bits)
        assert scheme.is_symmetric == symmetric and scheme.is_signed == symmetric
    for op in plan.graph.topological_order():  # activations stay float everywhere
        for tqc, var in zip(op.quant.inputs, op.inputs, strict=True):
            assert tqc is None or var.is_parameter
        assert all(t is None for t in op.quant.outputs)


def test_table_settings_overrides_and_platform_defaults_off():
    defaults = get_platform("onnxruntime").default_config()
    config = resolve_config(defaults, {"weight_only": {"enabled": True, "block_size": 128, "op_types": ["MatMul"]},
                                       "override": [{"op_name": "head", "weight": {"bits": 8}}]})
    assert config.activation is None and config.weight["block_size"] == 128 and config.weight["bits"] == 4
    assert config.quantize_op_types == {"MatMul"} and not config.passive_op_types
    assert config.accuracy["fallback"] is False and config.accuracy["equalization"] is False
    assert resolve_config({}, config.to_dict()) == config
    # a user-set accuracy pass stays on
    kept = resolve_config(defaults, {"weight_only": {"enabled": True}, "accuracy": {"fallback": {"max_gap_db": 2.0}}})
    assert kept.accuracy["fallback"] == {"max_gap_db": 2.0}


def test_override_widens_one_layer(decoder):
    plan = plan_for(decoder, "onnxruntime", preset="int4-weight-only",
                      config={"override": [{"op_name": "head", "weight": {"bits": 8}}]})
    schemes = _weights(plan)
    assert schemes["head"].num_of_bits == 8 and schemes["head"].channel_axis == 0
    assert schemes["block0.up"].num_of_bits == 4


def test_per_channel_override_keeps_the_output_channels(decoder):
    """A per_channel weight override under weight-only: one scale per output channel (MatMul [K, N]: axis 1; Gemm
    transB [N, K]: axis 0), the configuration's natural axis. It took the blocks' input axis (a (256, 512) MatMul
    weight got 256 scales on axis 0; found by a user-style probe)."""
    plan = plan_for(decoder, "onnxruntime", preset="int4-weight-only",
                    config={"override": [{"op_name": "head", "weight": {"granularity": "per_channel"}},
                                         {"op_name": "block0.down", "weight": {"granularity": "per_channel"}}]})
    schemes = _weights(plan)
    assert schemes["head"].policy & P.PER_CHANNEL and schemes["head"].channel_axis == 1
    assert schemes["block0.down"].policy & P.PER_CHANNEL and schemes["block0.down"].channel_axis == 0
    assert schemes["block0.up"].policy & P.PER_BLOCK and schemes["block0.up"].channel_axis == 0


def test_activation_override_is_refused_and_replaced_keys_are_named(decoder):
    """Under [weight_only], an [[override]] activation scheme wrote a model ONNX Runtime refused at its default
    optimization level, and [activation], [weight] or preset w8a8 were dropped without a word (found by a
    user-style probe, 5 and 6): the first is a ConfigError before any work, the others a warning naming them."""
    defaults = get_platform("onnxruntime").default_config()
    with pytest.raises(ConfigError, match=r"^config: override\[1\]\.activation: \[weight_only\] keeps activations"):
        resolve_config(defaults, {"weight_only": {"enabled": True}, "override": [
            {"op_name": "head", "weight": {"bits": 8}}, {"op_type": "MatMul", "activation": {"bits": 8}}]})
    assert resolve_config(defaults, {"weight_only": {"enabled": True},
                                     "override": [{"op_type": "MatMul", "activation": "float"}]}).ignored == ()
    with pytest.raises(ConfigError, match=r"^config: override\[0\]\.bias\.mode: \[weight_only\] keeps activations"):
        resolve_config(defaults, {"weight_only": {"enabled": True},  # it had no effect, without a word
                                  "override": [{"op_type": "Gemm", "bias": {"mode": "int32"}}]})
    config = resolve_config(defaults, {"weight_only": {"enabled": True}, "activation": {"bits": 8, "symmetric": False},
                                       "weight": {"bits": 8, "block_size": 32}}, preset="w8a8")
    # block_size 32 is what [weight_only] sets: not ignored; a saved config read back sets no other key
    assert config.ignored == ("preset 'w8a8': activation (format, signed, granularity), weight (granularity)",
                              "config: activation (bits, symmetric), weight (bits)")
    assert resolve_config(defaults, config.to_dict()).ignored == ()
    plain = resolve_config(defaults, {}, preset="int4-weight-only")
    assert plain.ignored == () and resolve_config(defaults, plain.to_dict()).ignored == ()
    with pytest.warns(UserWarning, match=r"ignored config: activation \(bits, symmetric\)"):
        plan_for(decoder, "onnxruntime", config={"weight_only": {"enabled": True},
                                                 "activation": {"bits": 8, "symmetric": False}})


@pytest.mark.parametrize("config, embed_bits", [({}, 8), ({"weight_only": {"embedding_bits": 4}}, 4),
                                               ({"override": [{"op_name": "embed", "weight": {"bits": 4}}]}, 4)])
def test_embedding_tables_get_embedding_bits_and_overrides_win(decoder, config, embed_bits):
    plan = plan_for(decoder, "onnxruntime", preset="int4-weight-only", config=config)
    schemes = _weights(plan)
    assert schemes["embed"].num_of_bits == embed_bits and schemes["embed"].channel_axis == 1
    assert schemes["head"].num_of_bits == 4 and schemes["block0.up"].num_of_bits == 4
    resolved = resolve_config(get_platform("onnxruntime").default_config(), config, preset="int4-weight-only")
    assert resolve_config({}, resolved.to_dict()) == resolved


@pytest.mark.parametrize("table, key", [({"enabled": True, "block_size": 48}, "weight_only.block_size"),
                                        ({"embedding_bits": 2}, "weight_only.embedding_bits"),
                                        ({"bits": 3}, "weight_only.bits"), ({"enable": True}, "weight_only.enable")])
def test_bad_settings_name_the_key(table, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        resolve_config({}, {"weight_only": table})


def test_transformers_page_names_the_presets_keys_and_export_options():
    from pathlib import Path

    from qtool.config.schema import SECTION_KEYS

    text = (Path(__file__).resolve().parents[2] / "docs" / "transformers.md").read_text()
    for name in ("int4-weight-only", "int8-weight-only", "accuracy_level", "weight_only_format", "awq", "gptq", "hqq",
                 *(f"`{key}`" for key in SECTION_KEYS["weight_only"] if key != "enabled")):
        assert name in text, name


def test_dispatch_op_type_lists_are_replaced_named_and_reasons_name_op_types(decoder):
    """[weight_only] quantizes op_types: a [dispatch] quantize_op_types of the user's was dropped with no word, the
    reasons and a typo's error named dispatch.quantize_op_types (found by a user-style probe, D3)."""
    defaults = get_platform("onnxruntime").default_config()
    config = resolve_config(defaults, {"weight_only": {"enabled": True}, "dispatch": {"quantize_op_types": ["Conv"]}})
    assert config.ignored == ("config: dispatch (quantize_op_types)",)
    assert resolve_config(defaults, config.to_dict()).ignored == ()  # the saved lists, sorted, are what it sets
    with pytest.warns(UserWarning, match=r"ignored config: dispatch \(quantize_op_types\) \(.*op_types"):
        plan = plan_for(decoder, "onnxruntime", config={"weight_only": {"enabled": True},
                                                        "dispatch": {"quantize_op_types": ["Conv"]}})
    down = plan.graph.operations["block0.down"].quant
    assert down.quantized and down.reason == "Gemm is in weight_only.op_types"
    plan = plan_for(decoder, "onnxruntime", config={"weight_only": {"enabled": True, "op_types": ["Gemm"]}})
    assert plan.graph.operations["head"].quant.reason == "not quantized on onnxruntime (MatMul is not in " \
                                                         "weight_only.op_types)"
    with pytest.raises(ConfigError, match=r"^config: weight_only\.op_types: 'Matmul' is no op type .* 'MatMul'"):
        plan_for(decoder, "onnxruntime", config={"weight_only": {"enabled": True, "op_types": ["Matmul"]}})
