"""annotate(): the ORT platform does not propose what it would flag; validation runs once per quantize."""

from __future__ import annotations

import numpy as np
import onnx
import qtool
import qtool_onnxruntime.export
import qtool_onnxruntime.rules
from ort_testkit import single_op_proto

SAMPLES = [{"x": np.random.default_rng(i).standard_normal((1, 8, 6, 6)).astype(np.float32)} for i in range(4)]


def _model(tmp_path):
    path = tmp_path / "deconv.onnx"
    onnx.save(single_op_proto("ConvTranspose"), path)
    return path


def test_conv_transpose_is_kept_float_with_the_kernel_reason_and_nothing_flagged(tmp_path):
    result = qtool.quantize(_model(tmp_path), "onnxruntime", SAMPLES, output=tmp_path / "q.onnx")

    op = result.graph.operations["op"]
    assert not op.quant.quantized
    assert op.quant.reason.startswith("kept float by onnxruntime: ONNX Runtime has no integer ConvTranspose kernel")
    assert not [d for d in result.diagnostics if d.code == "ort.perf.op-type"]
    exported = onnx.load(result.files[0])
    assert "DequantizeLinear" not in {n.op_type for n in exported.graph.node}


def test_conv_transpose_named_by_the_user_is_quantized_and_reported(tmp_path):
    config = {"dispatch": {"quantize_op_types": ["Conv", "ConvTranspose"]}}

    result = qtool.quantize(_model(tmp_path), "onnxruntime", SAMPLES, config=config, output=tmp_path / "q.onnx")

    assert result.graph.operations["op"].quant.quantized
    (flag,) = [d for d in result.diagnostics if d.code == "ort.perf.op-type"]
    assert flag.severity is qtool.Severity.PERFORMANCE and flag.op == "op"


def _float64_region(path):
    """Conv -> Reshape -> Cast to double -> MatMul in float64 -> Cast back -> MatMul: a float32 model that
    computes one layer in double (torch's ``.double()`` around a Linear)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    weights = [numpy_helper.from_array(rng.standard_normal((4, 8, 3, 3)).astype(np.float32), "w1"),
               numpy_helper.from_array(rng.standard_normal((64, 16)).astype(np.float64), "w2"),
               numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w3"),
               numpy_helper.from_array(np.array([-1, 64], np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], name="conv"),
             helper.make_node("Reshape", ["c", "shape"], ["f"], name="flatten"),
             helper.make_node("Cast", ["f"], ["f64"], name="to_double", to=TensorProto.DOUBLE),
             helper.make_node("MatMul", ["f64", "w2"], ["m64"], name="matmul_double"),
             helper.make_node("Cast", ["m64"], ["m"], name="to_float", to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["m", "w3"], ["y"], name="matmul")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_an_op_on_float64_tensors_is_kept_float_and_the_rest_quantized(tmp_path):
    """No Q/DQ takes float64: the one double MatMul refused the whole model at export, its float32 Conv and MatMul
    with it; it stays float now, with the reason, and the others are quantized."""
    result = qtool.quantize(_float64_region(tmp_path / "double.onnx"), "onnxruntime", SAMPLES,
                            output=tmp_path / "q.onnx")

    double = result.graph.operations["matmul_double"]
    assert not double.quant.quantized and "float64 tensor(s) 'w2'" in double.quant.reason
    assert result.graph.operations["conv"].quant.quantized and result.graph.operations["matmul"].quant.quantized
    exported = onnx.load(result.files[0])
    dequantized = {o for n in exported.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    fed = {n.name: all(i in dequantized for i in n.input[:2]) for n in exported.graph.node
           if n.op_type in ("Conv", "MatMul")}
    assert fed == {"conv": True, "matmul_double": False, "matmul": True}


def test_validation_runs_on_the_plan_and_once_on_the_result_never_in_the_export(tmp_path, monkeypatch):
    """The plan is validated as calibration starts (what it refuses stops the run before any data is read), the
    calibrated graph once; the export reads those diagnostics instead of validating again."""
    calls, exporting = [], []
    real = qtool_onnxruntime.rules.validate

    def counting(graph, options=None):
        calls.append(graph)
        return real(graph, options)

    def in_export(graph, options=None):
        exporting.append(graph)
        return real(graph, options)

    monkeypatch.setattr(qtool_onnxruntime.rules, "validate", counting)
    monkeypatch.setattr(qtool_onnxruntime.export, "validate", in_export)

    result = qtool.quantize(_model(tmp_path), "onnxruntime", SAMPLES, output=tmp_path / "q.onnx")

    assert exporting == []
    assert len(calls) >= 2 and calls[-1] is result.graph and calls.count(result.graph) <= 2
