"""End to end: ``qtool quantize --platform tensorrt``, then the ranges read back into a freshly planned graph."""

import numpy as np
import onnx
import onnxruntime as ort
import qtool
from onnx import numpy_helper
from qtool.cli.main import main
from qtool.pipeline import plan
from qtool.testing.models import masked_attention_model, token_matmuls_model
from qtool_tensorrt import read_cache, read_ranges
from qtool_tensorrt.cache import cache_text
from qtool_tensorrt.scales import activation_scales


def test_quantize_command_writes_model_ranges_and_cache(qtool_small_model, qtool_calibration_data, tmp_path):
    out = tmp_path / "out" / "model.onnx"
    assert main(["quantize", str(qtool_small_model), "--platform", "tensorrt", "--calib", str(qtool_calibration_data),
                 "-o", str(out)]) == 0
    cache, ranges = out.with_name("model.calibration.cache"), out.with_name("model.ranges.json")
    names = [line.split(": ")[0] for line in cache.read_text().splitlines()[1:]]
    assert "input" in names and "output" in names
    produced = {o for node in onnx.load(out).graph.node for o in node.output} | {"input"}
    assert set(names) <= produced  # every range names a tensor of the exported model
    ort.InferenceSession(str(out))  # the float model still loads

    for reader, path in ((read_cache, cache), (read_ranges, ranges)):
        fresh = plan(qtool_small_model, "tensorrt").graph
        report = reader(path, fresh)
        assert report["unused"] == [] and report["missing"] == []
        assert sorted(report["set"] + report["followed"]) == sorted(names)
        assert "flat_out" in report["followed"]  # a Flatten output shares the pooled tensor's scale
        assert cache_text(activation_scales(fresh)) == cache.read_text()


def test_read_back_names_the_mask_calibration_kept_float_as_missing(tmp_path):
    """A planned graph still marks a causal mask's Add quantized; calibration kept it float, so the files have no
    line for it and the reader lists it as missing (docs/platforms/tensorrt.md says so)."""
    model = masked_attention_model(tmp_path / "attention.onnx")
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).standard_normal((8, 4, 8)).astype(np.float32))
    result = qtool.quantize(model, "tensorrt", calib, output=tmp_path / "out" / "model.onnx")
    assert "masked" not in {e.tensor for e in qtool.quantized_tensors(result.graph)}
    assert "masked" in {e.tensor for e in qtool.quantized_tensors(plan(model, "tensorrt").graph, settled=False)}
    for reader, path in ((read_cache, "model.calibration.cache"), (read_ranges, "model.ranges.json")):
        report = reader(tmp_path / "out" / path, plan(model, "tensorrt").graph)
        assert report["missing"] == ["masked"] and "probs" in report["set"], report


def test_four_bit_activations_are_refused_before_writing(qtool_small_model, qtool_calibration_data, tmp_path, capsys):
    config = tmp_path / "four.toml"
    config.write_text("[activation]\nbits = 4\n")
    out = tmp_path / "out" / "model.onnx"
    assert main(["quantize", str(qtool_small_model), "--platform", "tensorrt", "--calib", str(qtool_calibration_data),
                 "--config", str(config), "-o", str(out)]) == 1
    error = capsys.readouterr().err
    # one finding at every activation, named once with its first places
    assert "error [trt.activation-scheme] int4 sym per-tensor [-8, 7] at 7 places (op 'conv1', tensor 'input'; " \
        in error
    assert not out.parent.exists()


def test_non_default_weights_warn(qtool_small_model, qtool_calibration_data, tmp_path):
    result = qtool.quantize(qtool_small_model, "tensorrt", qtool_calibration_data,
                            config={"weight": {"bits": 4}}, output=tmp_path / "model.onnx")
    warnings = [d for d in result.diagnostics if d.code == "trt.weights-not-exported"]
    assert len(warnings) == 1 and warnings[0].severity is qtool.Severity.WARNING
    # the file holds the 4-bit grid (it said the scheme did not reach the engine): at most 16 values a channel
    assert "written as float values on the configured int4" in warnings[0].message
    written = onnx.load(tmp_path / "model.onnx")
    weight = next(numpy_helper.to_array(t) for t in written.graph.initializer if t.name == "conv1.weight")
    assert max(len(np.unique(channel)) for channel in weight) <= 16 < len(np.unique(weight))
    float_weights = qtool.quantize(qtool_small_model, "tensorrt", qtool_calibration_data, config={"weight": "float"})
    (warning,) = float_weights.diagnostics
    assert (warning.code, warning.op, warning.tensor, warning.scheme) == ("trt.weights-not-exported", "conv1",
                                                                          "conv1.weight", "float")
    assert "3 weight tensor(s) kept float are written as they are" in warning.message
    plain = qtool.quantize(qtool_small_model, "tensorrt", qtool_calibration_data)
    assert [d for d in plain.diagnostics if d.code.startswith("trt.")] == []


def test_export_options_from_the_command_line_set_the_cache_header(qtool_small_model, qtool_calibration_data,
                                                                   tmp_path):
    out = tmp_path / "out" / "model.onnx"
    assert main(["quantize", str(qtool_small_model), "--platform", "tensorrt", "--calib", str(qtool_calibration_data),
                 "-o", str(out), "--export-option", "tensorrt_version=8.6.1",
                 "--export-option", "tensorrt_calibrator=MinMaxCalibration"]) == 0
    assert out.with_name("model.calibration.cache").read_text().splitlines()[0] == "TRT-8601-MinMaxCalibration"


def test_bad_export_options_fail_before_any_work(qtool_small_model, qtool_calibration_data, tmp_path, capsys):
    out = tmp_path / "out" / "model.onnx"
    cases = [("tensorrt_versoin=8.6", "export option 'tensorrt_versoin': platform 'tensorrt' does not read it; "
                                      "did you mean 'tensorrt_version'?"),
             ("tensorrt_version=eight", "tensorrt_version 'eight': expected MAJOR.MINOR[.PATCH]"),
             ("tensorrt_version=10", "tensorrt_version 10: not an encoded TensorRT version"),
             ("tensorrt_calibrator=Best", "tensorrt_calibrator 'Best': expected one of EntropyCalibration2"),
             ("tensorrt_version", "--export-option 'tensorrt_version': expected KEY=VALUE")]
    for pair, message in cases:
        assert main(["quantize", str(qtool_small_model), "--platform", "tensorrt", "--calib",
                     str(qtool_calibration_data), "-o", str(out), "--export-option", pair]) != 0
        error = capsys.readouterr().err
        assert message in " ".join(error.split()), error
        assert not out.parent.exists()


def test_list_platforms_names_the_export_options():
    described = qtool.get_platform("tensorrt").describe()["export_options"]
    assert set(described) == {"tensorrt_version", "tensorrt_calibrator"}
    assert "8.6.1" in described["tensorrt_version"]


def test_constants_of_elementwise_ops_stay_float(tmp_path):
    """A detector's decode (Conv, then Mul by an anchor grid and Add of an offset): TensorRT quantizes only the
    Conv's weights; the grid and the offset stayed int8 in qtool's simulation (with a warning that such 'weights'
    are not exported), so its numbers were not the engine's."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    node = helper.make_node
    graph = helper.make_graph(
        [node("Conv", ["x", "w"], ["c"]), node("Mul", ["c", "grid"], ["scaled"]),
         node("Add", ["scaled", "shift"], ["y"])],
        "decode", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
        [numpy_helper.from_array(rng.standard_normal((3, 2, 1, 1)).astype(np.float32), "w"),
         numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4), "grid"),
         numpy_helper.from_array(np.array(0.37, np.float32), "shift")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    calib = [{"x": rng.standard_normal((1, 2, 4, 4)).astype(np.float32)} for _ in range(4)]
    result = qtool.quantize(tmp_path / "m.onnx", "tensorrt", calib, calib_layout="feeds", output=tmp_path / "q.onnx")
    by_type = {op.op_type: op for op in result.graph.operations.values()}
    assert by_type["Mul"].quant.inputs[1] is None and by_type["Add"].quant.inputs[1] is None
    assert by_type["Mul"].quant.quantized and by_type["Conv"].quant.inputs[1].role == "weight"
    assert not [d for d in result.diagnostics if d.code == "trt.weights-not-exported"]


def test_files_list_tensors_in_topological_order(tmp_path):
    """A pre-norm block: x is read float by LayerNormalization and quantized only by the residual Add, the last
    op; the cache and the JSON listed x after the MatMul's output, not first as tensorrt.md promises."""
    import json

    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    node = helper.make_node
    graph = helper.make_graph(
        [node("LayerNormalization", ["x", "gain", "shift"], ["norm"], axis=-1),
         node("MatMul", ["norm", "w"], ["proj"]), node("Add", ["proj", "x"], ["y"])],
        "prenorm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4])],
        [numpy_helper.from_array(np.ones(4, np.float32), "gain"), numpy_helper.from_array(np.zeros(4, np.float32),
                                                                                          "shift"),
         numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    calib = [{"x": rng.standard_normal((1, 3, 4)).astype(np.float32)} for _ in range(4)]
    qtool.quantize(tmp_path / "m.onnx", "tensorrt", calib, calib_layout="feeds", output=tmp_path / "q.onnx")
    cached = [line.split(": ")[0] for line in (tmp_path / "q.calibration.cache").read_text().splitlines()[1:]]
    assert cached == ["x", "norm", "proj", "y"]
    assert list(json.loads((tmp_path / "q.ranges.json").read_text())["act_quant_info"]) == cached


def test_ops_from_outside_onnx_domain_are_a_warning(tmp_path):
    """ONNX Runtime's contrib ops (a transformer-optimized BERT's Attention, here a Gelu) are written as they are,
    and TensorRT's parser reads them only as plugins of the same name: said once per op type."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    weights = {name: rng.standard_normal((4, 4, 1, 1)).astype(np.float32) for name in ("w1", "w2")}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1"),
             helper.make_node("Gelu", ["c1"], ["g"], name="gelu", domain="com.microsoft"),
             helper.make_node("Conv", ["g", "w2"], ["y"], name="conv2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3])],
                              [numpy_helper.from_array(value, name) for name, value in weights.items()])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), tmp_path / "gelu.onnx")
    feeds = [{"x": rng.standard_normal((1, 4, 3, 3)).astype(np.float32)} for _ in range(4)]

    result = qtool.quantize(tmp_path / "gelu.onnx", "tensorrt", feeds, calib_layout="feeds")

    (found,) = [d for d in result.diagnostics if d.code == "trt.foreign-op"]
    assert found.op == "gelu" and "1 op(s) com.microsoft::Gelu are written as they are" in found.message



def test_the_files_name_the_data_file_of_a_model_beyond_one_protobuf(tmp_path, monkeypatch):
    """The model's data file is one of the files written (it was left out of them)."""
    import qtool.ir.onnx_export

    monkeypatch.setattr(qtool.ir.onnx_export, "PROTO_LIMIT", 4096)  # lowered: a small model crosses it
    calib = [{"x": np.random.default_rng(0).standard_normal((1, 4, 64)).astype(np.float32)}]
    result = qtool.quantize(token_matmuls_model(tmp_path / "m.onnx"), "tensorrt", calib, calib_layout="feeds",
                            output=tmp_path / "out" / "q.onnx")
    assert [p.name for p in result.files] == ["q.onnx", "q.onnx.data", "q.ranges.json", "q.calibration.cache"]
    ort.InferenceSession(str(result.files[0]))  # the model reads its data file
