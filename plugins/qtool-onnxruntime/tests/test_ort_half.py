"""float16 and bfloat16 models: kept float by default (ORT's CPU integer kernels take float32 Q/DQ), quantized
where the user asks, with Q/DQ of the tensors' own type at opset 19 or later."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import qtool
from onnx import TensorProto, helper, numpy_helper
from qtool.pipeline import UnsupportedModelError
from qtool.quant import QuantScheme
from qtool_onnxruntime.storage import INTEGER_TYPES, lowest_opset, placement_problem

RNG = np.random.default_rng(0)
SAMPLES = [{"x": RNG.standard_normal((1, 4, 8, 8)).astype(np.float16)} for _ in range(6)]
ASK = {"dispatch": {"quantize_op_types": ["Conv", "Gemm"]}}


def _half_model(path, opset: int = 17):
    """Conv (+ float16 bias) -> Relu -> Flatten -> Gemm (+ bias), all float16."""
    def param(name, *shape):
        return numpy_helper.from_array(RNG.normal(0, 0.3, shape).astype(np.float16), name)

    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Flatten", ["r"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], name="gemm", transB=1)]
    graph = helper.make_graph(nodes, "half", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 10])],
                              [param("w", 8, 4, 3, 3), param("b", 8), param("w2", 10, 512), param("b2", 10)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


def test_a_float16_model_stays_float_by_default_and_says_why(tmp_path):
    result = qtool.quantize(_half_model(tmp_path / "m.onnx"), "onnxruntime", SAMPLES, output=tmp_path / "q.onnx")

    for name in ("conv", "gemm"):
        op = result.graph.operations[name]
        assert not op.quant.quantized
        assert op.quant.reason.startswith("kept float by onnxruntime: it computes in float16")
    (low,) = [d for d in result.diagnostics if d.code == "coverage.low"]
    assert "convert the model to float32" in low.message
    assert "DequantizeLinear" not in {n.op_type for n in onnx.load(result.files[0]).graph.node}


def test_a_float16_model_the_user_asks_for_is_quantized_with_float16_qdq(tmp_path):
    model = _half_model(tmp_path / "m.onnx")
    result = qtool.quantize(model, "onnxruntime", SAMPLES, config=ASK, output=tmp_path / "q.onnx")

    written = onnx.load(result.files[0])
    assert max(o.version for o in written.opset_import if o.domain in ("", "ai.onnx")) == 19
    scales = [t for t in written.graph.initializer if t.name.endswith("_scale")]
    assert scales and {t.data_type for t in scales} == {TensorProto.FLOAT16}
    dequantized = {n.output[0] for n in written.graph.node if n.op_type == "DequantizeLinear"}
    for node in written.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            assert node.input[0] in dequantized and node.input[1] in dequantized
    flagged = {d.op for d in result.diagnostics if d.code == "ort.perf.half"}
    assert flagged == {"conv", "gemm"}
    assert result.summary["float_vs_quantized"]["outputs"]["y"]["sqnr_db"] > 25
    # the diagnostic tells the truth: the graph ORT builds holds no integer kernel
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "built.onnx")
    session = ort.InferenceSession(str(result.files[0]), options, providers=["CPUExecutionProvider"])
    built = {n.op_type for n in onnx.load(tmp_path / "built.onnx").graph.node}
    assert not built & {"QLinearConv", "QGemm", "QLinearMatMul", "MatMulIntegerToFloat"}
    reference = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    got, want = session.run(None, SAMPLES[0])[0], reference.run(None, SAMPLES[0])[0]
    assert got.dtype == np.float16 and np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99


def test_a_float16_model_written_below_opset_19_is_refused_before_anything_is_written(tmp_path):
    model = _half_model(tmp_path / "m.onnx")
    with pytest.raises(UnsupportedModelError, match="float16 values need opset 19"):
        qtool.quantize(model, "onnxruntime", SAMPLES, config=ASK, opset=17, output=tmp_path / "q.onnx")
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.parametrize("values", [np.float16, ml_dtypes.bfloat16])
def test_half_values_need_opset_19_and_the_onnx_domain(values):
    int8, int4 = (next(t for t in INTEGER_TYPES if t.name == n) for n in ("int8", "int4"))
    per_tensor = QuantScheme.integer(8)
    assert lowest_opset(int8, per_tensor, np.dtype(values)) == 19
    assert lowest_opset(int4, QuantScheme.integer(4), np.dtype(values)) == 21  # no com.microsoft form for them
    assert placement_problem(int8, per_tensor, 19, np.dtype(values)) is None
    assert "need opset 19" in placement_problem(int8, per_tensor, 18, np.dtype(values))
    assert lowest_opset(int8, per_tensor) == 10


def test_float64_values_have_no_qdq():
    int8 = next(t for t in INTEGER_TYPES if t.name == "int8")
    assert "float64" in placement_problem(int8, QuantScheme.integer(8), 21, np.dtype(np.float64))
