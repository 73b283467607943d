"""Bad configurations: one ConfigError naming the file, the dotted key and the problem."""

from __future__ import annotations

import re

import pytest
from qtool.config import ConfigError, load_config_file, resolve_config
from qtool.errors import QtoolError


@pytest.mark.parametrize("text, message", [
    ("[weight]\nbitz = 4\n", r"weight\.bitz: unknown key; did you mean 'bits'\?"),
    ("[activaton]\nbits = 4\n", r"activaton: unknown key; did you mean 'activation'\?"),
    ("[dispatch]\nexclud = ['a']\n", r"dispatch\.exclud: unknown key; did you mean 'exclude'\?"),
    ("[[override]]\nop_type = 'Conv'\nweight = {bitz = 4}\n", r"override\[0\]\.weight\.bitz: unknown key; "
     r"did you mean 'bits'\?"),
    ("[[override]]\nop_type = 'Conv'\nkeep_float = true\n[[override]]\nop_type = 'Gemm'\nweight = {bits = 4}\n"
     "[[override]]\nop_name = 'x'\nweight = {bitz = 4}\n", r"override\[2\]\.weight\.bitz: unknown key"),
    ("[weight]\nbits = '8'\n", r"weight\.bits: expected an integer, got str '8'"),
    ("[weight]\nbits = 17\n", r"weight\.bits: must be >= 1 and <= 16, got 17"),
    ("[weight]\nbits = true\n", r"weight\.bits: expected an integer, got bool True"),
    ("[weight]\nsymmetric = 1\n", r"weight\.symmetric: expected a boolean, got int 1"),
    ("[weight]\ngranularity = 'per_chanel'\n", r"weight\.granularity: 'per_chanel' is not one of .*"
     r"did you mean 'per_channel'\?"),
    ("[activation]\nrounding = 'half_evn'\n", r"activation\.rounding: .*did you mean 'half_even'\?"),
    ("[activation]\nformat = 'fp8e4m3'\n", r"activation\.format: .*did you mean 'fp8_e4m3'\?"),
    ("activation = 'fp8'\n", r"activation: a scheme is a table or \"float\", got 'fp8'"),
    ("weight = 3\n", r"weight: expected a table, got int 3"),
    ("[bias]\nmode = 'int16'\n", r"bias\.mode: 'int16' is not one of 'int32', 'float'"),
    ("[dispatch]\nexclude = 'head.*'\n", r"dispatch\.exclude: expected a list of strings, got str 'head\.\*'"),
    ("[calibration]\npercentile = 0\n", r"calibration\.percentile: must be > 50 and <= 100, got 0"),
    ("[alignment]\nconcat = 'min'\n", r"alignment\.concat: 'min' is not one of 'output', 'max', 'none'"),
    ("preset = 'w8a9'\n", r"preset: unknown preset 'w8a9'; did you mean 'w8a8'\?"),
    ("override = {op_type = 'Conv'}\n", r"override: expected a list of tables"),
    ("[[override]]\nweight = {bits = 4}\n", r"override\[0\]: needs exactly one matcher .*got none"),
    ("[[override]]\nop_type = 'Conv'\nop_name = 'c*'\nweight = {bits = 4}\n",
     r"override\[0\]: needs exactly one matcher .*got op_type, op_name"),
    ("[[override]]\nop_type = 'Conv'\n", r"override\[0\]: sets nothing"),
    ("[[override]]\nop_type = 'Conv'\nkeep_float = true\nweight = {bits = 4}\n",
     r"override\[0\]\.keep_float: keep_float = true conflicts with weight"),
    ("[[override]]\ntensor = 'b'\nbias = {mode = 'float'}\n", r"override\[0\]\.bias: bias applies per op"),
])
def test_structural_errors_name_file_and_key(text, message, write_config):
    path = write_config(text)
    with pytest.raises(ConfigError, match=message) as info:
        resolve_config({}, path)
    assert str(info.value).startswith(f"{path}: ")
    assert isinstance(info.value, QtoolError)


@pytest.mark.parametrize("text, message", [
    ("[activation]\nformat = 'fp8_e4m3'\npower_of_2 = true\n",
     r"activation\.power_of_2: power_of_2 = true conflicts with format = 'fp8_e4m3'"),
    ("[activation]\nformat = 'fp8_e4m3'\nsymmetric = false\n", r"activation\.symmetric: .*float formats are"),
    ("[activation]\nformat = 'float'\n", r"activation\.format: format = 'float' needs exponent_bits"),
    ("[activation]\nformat = 'float'\nexponent_bits = 4\nmantissa_bits = 3\nbits = 9\n",
     r"activation\.bits: bits = 9 but 1 \+ exponent_bits \+ mantissa_bits = 8"),
    ("[activation]\nformat = 'fp8_e5m2'\nbits = 16\n", r"activation\.bits: bits = 16 conflicts with format = "
     r"'fp8_e5m2' \(bits = 8\)"),
    ("[activation]\nformat = 'fp8_e4m3'\nquant_max = 100\n", r"activation\.quant_max: quant_max conflicts"),
    ("[weight]\nexponent_bits = 4\n", r"weight\.exponent_bits: exponent_bits applies to float formats only"),
    ("[weight]\nbits = 4\nquant_min = -128\nquant_max = 127\n",
     r"weight\.bits: .*range \[-128, 127\] does not fit 4 bits"),
    ("[activation]\nsigned = false\nquant_min = -128\nquant_max = 127\n",
     r"activation\.signed: signed = false conflicts with quant_min = -128"),
    ("[activation]\nquant_min = 1\nquant_max = 255\n", r"activation\.quant_min: .*must contain 0"),
    ("[weight]\ngranularity = 'per_tensor'\naxis = 1\n", r"weight\.axis: axis applies to per_channel"),
    ("[weight]\ngranularity = 'per_block'\n", r"weight\.granularity: granularity = 'per_block' needs 'block_size'"),
    ("[weight]\nblock_size = 32\n", r"weight\.block_size: block_size applies to granularity = 'per_block' only"),
    ("[[override]]\nop_name = 'head.*'\nweight = {format = 'fp8_e4m3', power_of_2 = true}\n",
     r"override\[0\]: weight\.power_of_2: power_of_2 = true conflicts"),
])
def test_invalid_combinations_name_the_key_and_conflict(text, message, write_config):
    path = write_config(text)
    with pytest.raises(ConfigError, match=message) as info:
        resolve_config({}, path)
    assert str(path) in str(info.value)


def test_conflict_across_layers_blames_the_users_file_and_names_the_other_source(write_config):
    platform = {"activation": {"power_of_2": True}}
    path = write_config("[activation]\nformat = 'fp8_e4m3'\n")
    with pytest.raises(ConfigError, match=rf"^{path}: activation\.format: power_of_2 = true conflicts with format "
                       r"= 'fp8_e4m3'.*\(power_of_2 set by platform defaults\)"):
        resolve_config(platform, path)


def test_platform_defaults_are_validated_too():
    with pytest.raises(ConfigError, match=r"^platform defaults: fusion\.fuse_activation: unknown key; did you mean"):
        resolve_config({"fusion": {"fuse_activation": True}})


def test_unknown_preset_argument_hints():
    with pytest.raises(ConfigError, match=r"^unknown preset 'fp8-e4m4'; did you mean 'fp8-e4m3'\?"):
        resolve_config({}, None, preset="fp8-e4m4")


@pytest.mark.parametrize("suffix, text, message", [
    (".toml", "[weight\nbits = 4\n", r"invalid TOML"),
    (".yaml", "weight: [bits: 4\n", r"invalid YAML"),
    (".json", '{"weight": }', r"invalid JSON"),
    (".yaml", "- 1\n- 2\n", r"the top level must be a table, got list"),
    (".ini", "[weight]\n", r"unknown config file type '\.ini'"),
])
def test_unreadable_files_name_the_file(suffix, text, message, tmp_path):
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config_file(path)
    assert str(info.value).startswith(f"{path}: ")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml: no such config file"):
        resolve_config({}, tmp_path / "nope.toml")


def test_empty_yaml_is_an_empty_config(write_config):
    assert resolve_config({}, write_config("", ".yaml")) == resolve_config({}, None)


@pytest.mark.parametrize("text, message", [
    ("[weight]\naxis = 7\n", r"weight\.axis: axis 7 is outside tensor 'conv1\.weight' of rank 4 \[op 'conv1'\]"),
    ("[activation]\ngranularity = 'per_channel'\naxis = -9\n",
     r"activation\.axis: axis -9 is outside tensor 'input' of rank 4"),
])
def test_an_axis_outside_the_tensor_is_refused_before_calibration(text, message, tmp_path):
    """It reached the export: ORT refused the written model after the whole run (and the file was left)."""
    import numpy as np
    import qtool
    from qtool.testing.models import small_model

    model = small_model(tmp_path / "m.onnx")
    (tmp_path / "c.toml").write_text(text)
    np.savez(tmp_path / "c.npz", input=np.zeros((2, 3, 8, 8), np.float32))  # (NaN is refused as the data loads)
    with pytest.raises(ConfigError, match=str(tmp_path / "c.toml").replace(".", r"\.") + ": " + message):
        qtool.quantize(model, "onnxruntime", tmp_path / "c.npz", config=tmp_path / "c.toml", output=tmp_path / "q")
    assert not list(tmp_path.glob("q*"))


def test_a_weight_axis_for_the_layers_leaves_an_adds_constant_per_tensor():
    """[weight] axis = 1 means the layers' weights: a bias an Add reads (rank 1) is per tensor, not refused
    ("axis 1 is outside tensor 'b' of rank 1 [op 'add']" stopped a transformer on TensorRT)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    from qtool.ir import from_model_proto

    inits = [numpy_helper.from_array(np.ones((4, 4), np.float32), "w"), numpy_helper.from_array(np.ones(4, np.float32),
                                                                                               "b")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"), helper.make_node("Add", ["m", "b"], ["y"],
                                                                                        name="add")]
    graph = from_model_proto(helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], inits)))
    config = resolve_config({}, {"weight": {"granularity": "per_channel", "axis": 1}})
    assert config.scheme_for(graph.operations["mm"], "weight", "w", rank=2).channel_axis == 1
    assert not config.scheme_for(graph.operations["add"], "weight", "b", rank=1).is_per_channel
    with pytest.raises(ConfigError, match=r"weight\.axis: axis 1 is outside tensor 'w' of rank 1 \[op 'mm'\]"):
        config.scheme_for(graph.operations["mm"], "weight", "w", rank=1)


def test_an_observers_option_is_checked_with_the_configuration(tmp_path):
    """observer = "percentile:150" failed in calibration, after the model was loaded and simplified."""
    (tmp_path / "c.toml").write_text('[activation]\nobserver = "percentile:150"\n')
    with pytest.raises(ConfigError, match=r"c\.toml: activation\.observer: observer 'percentile': percentile must "
                                          r"be in \(50, 100\], got 150"):
        resolve_config({}, tmp_path / "c.toml")


def test_an_unknown_device_is_refused_before_any_work(tmp_path):
    import qtool
    from qtool.testing.models import small_model

    with pytest.raises(QtoolError, match=r"device 'tpu': expected one of cpu, cuda"):
        qtool.quantize(small_model(tmp_path / "m.onnx"), "onnxruntime", tmp_path / "missing.npz", device="tpu")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a machine with CUDA runs on it")
def test_cuda_where_none_is_available_is_refused_before_any_work(tmp_path):
    """device="cuda" on a CPU-only machine failed only inside RuntimeCalibration, after seven passes."""
    import qtool
    from qtool.testing.models import small_model

    with pytest.raises(QtoolError, match=r"^device 'cuda' requested but CUDA is not available$"):
        qtool.quantize(small_model(tmp_path / "m.onnx"), "onnxruntime", tmp_path / "missing.npz", device="cuda")


@pytest.mark.parametrize("suffix, text, line", [
    (".toml", "[weight]\nbits = 4\nbits = 8\n", 3),
    (".yaml", "weight:\n  bits: 4\n  bits: 8\n", 2),
    (".json", '{"weight": {"bits": 4, "bits": 8}}', None)])
def test_a_key_given_twice_is_named_in_every_format(write_config, suffix, text, line):
    """docs/configuration.md promises it in all three; TOML's read 'Cannot overwrite a value (at line 3, column 9)'."""
    path = write_config(text, suffix)
    where = f" (line {line})" if line else ""
    with pytest.raises(ConfigError, match=rf"key 'bits' is given twice{re.escape(where)}"):
        load_config_file(path)
