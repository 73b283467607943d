"""float16 and bfloat16 models: quantized by default into ONNX Runtime's CPU integer kernels, the written model
computing in float32 between Casts that keep the graph inputs' and outputs' types (see qtool_onnxruntime.half)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import qtool
from onnx import TensorProto, helper, numpy_helper
from ort_testkit import FLOAT_COMPUTE, optimized_ops
from qtool.ir import load
from qtool.quant import QuantScheme
from qtool_onnxruntime.storage import INTEGER_TYPES, placement_problem, value_type

RNG = np.random.default_rng(0)
TYPES = {TensorProto.FLOAT16: np.dtype(np.float16), TensorProto.BFLOAT16: np.dtype(ml_dtypes.bfloat16)}


def _param(name, dtype, *shape, scale=0.3):
    return numpy_helper.from_array(RNG.normal(0, scale, shape).astype(dtype), name)


def _half_cnn(path, elem=TensorProto.FLOAT16, opset: int = 17):
    """Conv (+ bias) -> Relu -> Flatten -> Gemm (+ bias), all of one half type."""
    dtype = TYPES[elem]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Flatten", ["r"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], name="gemm", transB=1)]
    graph = helper.make_graph(nodes, "half", [helper.make_tensor_value_info("x", elem, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", elem, [1, 10])],
                              [_param("w", dtype, 8, 4, 3, 3), _param("b", dtype, 8),
                               _param("w2", dtype, 10, 512, scale=0.05), _param("b2", dtype, 10)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


def _samples(elem, count: int = 8) -> list[dict]:
    return [{"x": RNG.standard_normal((1, 4, 8, 8)).astype(TYPES[elem])} for _ in range(count)]


def _fp16_everywhere(path):
    """A float16 model with a half type in every place the export lifts: MatMul -> Relu times a ConstantOfShape of
    float16 value, plus an int64 input Cast to float16, into graph output y, which a second MatMul also reads
    through an If whose branches hold a float16 initializer and float16 outputs: graph outputs y and z."""
    h = TensorProto.FLOAT16
    then = helper.make_graph([helper.make_node("Mul", ["y", "two"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", h, [2, 4])],
                             [numpy_helper.from_array(np.full((1,), 2, np.float16), "two")])
    other = helper.make_graph([helper.make_node("Identity", ["y"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", h, [2, 4])])
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m"], name="mm1"),
             helper.make_node("Relu", ["m"], ["r"], name="relu"),
             helper.make_node("Shape", ["m"], ["s"], name="shape"),
             helper.make_node("ConstantOfShape", ["s"], ["half"], name="fill",
                              value=numpy_helper.from_array(np.array([0.5], np.float16))),
             helper.make_node("Mul", ["r", "half"], ["rh"], name="scale"),
             helper.make_node("Cast", ["ids"], ["idf"], name="cast", to=h),
             helper.make_node("Add", ["rh", "idf"], ["y"], name="add"),
             helper.make_node("If", ["flag"], ["picked"], name="branch", then_branch=then, else_branch=other),
             helper.make_node("MatMul", ["picked", "w2"], ["z"], name="mm2")]
    graph = helper.make_graph(nodes, "fp16", [helper.make_tensor_value_info("x", h, [2, 8]),
                                              helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 4]),
                                              helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", h, [2, 4]),
                               helper.make_tensor_value_info("z", h, [2, 3])],
                              [_param("w1", np.float16, 8, 4), _param("w2", np.float16, 4, 3)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _run(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def _sqnr(reference, got) -> float:
    reference, got = np.asarray(reference, np.float64), np.asarray(got, np.float64)
    return 10 * np.log10(np.sum(reference ** 2) / np.sum((reference - got) ** 2))


def test_a_float16_model_quantizes_into_integer_kernels_by_default(tmp_path):
    model = _half_cnn(tmp_path / "m.onnx")
    samples = _samples(TensorProto.FLOAT16)
    result = qtool.quantize(model, "onnxruntime", samples, output=tmp_path / "q.onnx")

    assert all(result.graph.operations[name].quant.quantized for name in ("conv", "gemm"))
    assert not [d for d in result.diagnostics if d.code.startswith("ort.perf") or d.code == "coverage.low"]
    (note,) = [d for d in result.diagnostics if d.code == "ort.float32-compute"]
    assert "computes in float16" in note.message and "feeds and gets float16" in note.message
    written = onnx.load(result.files[0])
    assert written.opset_import[0].version == 17  # float32 Q/DQ need no opset 19
    assert [(i.name, i.type.tensor_type.elem_type) for i in written.graph.input] == [("x", TensorProto.FLOAT16)]
    assert [(o.name, o.type.tensor_type.elem_type) for o in written.graph.output] == [("y", TensorProto.FLOAT16)]
    assert not [t.name for t in written.graph.initializer if t.data_type == TensorProto.FLOAT16]
    built = optimized_ops(result.files[0], tmp_path)
    assert {"QLinearConv", "QGemm"} <= set(built) and not set(built) & FLOAT_COMPUTE
    # the summary measures the written model against the float16 one, as ONNX Runtime runs both
    sqnr = result.summary["float_vs_quantized"]["outputs"]["y"]["sqnr_db"]
    ours = [_run(result.files[0], s)[0] for s in samples]
    theirs = [_run(model, s)[0] for s in samples]
    assert ours[0].dtype == np.float16
    assert sqnr > 30 and abs(_sqnr(theirs, ours) - sqnr) < 0.5


def test_explain_says_a_float16_model_is_quantized_and_written_in_float32(tmp_path):
    explained = qtool.explain(_half_cnn(tmp_path / "m.onnx"), "onnxruntime")
    ops = {op["name"]: op for op in explained.document["ops"]}
    assert ops["conv"]["quantized"] and ops["gemm"]["quantized"]
    assert "float16" not in ops["conv"]["reason"]
    (note,) = [d for d in explained.document["diagnostics"] if d["code"] == "ort.float32-compute"]
    assert note["severity"] == "warning" and "written model computes in float32" in note["message"]


def test_a_bfloat16_model_onnx_runtime_cannot_run_is_written_so_that_it_runs(tmp_path):
    """ORT's CPU provider has no bfloat16 Conv: the bfloat16 model fails to load; written in float32 inside, with
    bfloat16 in and out, it runs as integer kernels. The summary measures it against qtool's float run of the
    bfloat16 model (the executor's, ORT refusing it), as SQNR: bfloat16 outputs are floats."""
    model = _half_cnn(tmp_path / "m.onnx", TensorProto.BFLOAT16)
    with pytest.raises(Exception, match="bfloat16"):
        ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    result = qtool.quantize(model, "onnxruntime", _samples(TensorProto.BFLOAT16), output=tmp_path / "q.onnx",
                            check_agreement=True)

    written = onnx.load(result.files[0])
    assert written.graph.input[0].type.tensor_type.elem_type == TensorProto.BFLOAT16
    assert written.graph.output[0].type.tensor_type.elem_type == TensorProto.BFLOAT16
    assert {"QLinearConv", "QGemm"} <= set(optimized_ops(result.files[0], tmp_path))
    assert result.summary["float_vs_quantized"]["outputs"]["y"]["sqnr_db"] > 30
    assert result.agreement["outputs"]["y"]["cosine"] > 0.999


def test_every_half_type_of_the_model_is_lifted_and_its_outputs_keep_theirs(tmp_path):
    model = _fp16_everywhere(tmp_path / "m.onnx")
    samples = [{"x": RNG.standard_normal((2, 8)).astype(np.float16), "ids": RNG.integers(0, 3, (2, 4)),
                "flag": np.array(k % 2 == 0)} for k in range(8)]
    result = qtool.quantize(model, "onnxruntime", samples, output=tmp_path / "q.onnx", check_agreement=True,
                            calib_layout="feeds")

    assert result.graph.operations["mm1"].quant.quantized and result.graph.operations["mm2"].quant.quantized
    written = onnx.load(result.files[0])
    assert [o.type.tensor_type.elem_type for o in written.graph.output] == [TensorProto.FLOAT16] * 2
    assert [i.type.tensor_type.elem_type for i in written.graph.input] == [TensorProto.FLOAT16, TensorProto.INT64,
                                                                            TensorProto.BOOL]
    assert "QLinearMatMul" in optimized_ops(result.files[0], tmp_path)
    for sample in samples[:2]:
        ours, theirs = _run(result.files[0], sample), _run(model, sample)
        assert [a.dtype for a in ours] == [np.dtype(np.float16)] * 2
        assert all(_sqnr(t, o) > 30 for t, o in zip(theirs, ours, strict=True))
    assert result.agreement["min_cosine"] > 0.999


def test_a_float16_model_quantized_weight_only_is_written_with_matmulnbits(tmp_path):
    """ORT refused it before: MatMulNBits' float32 scales beside the float16 values of the model."""
    h = TensorProto.FLOAT16
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m"], name="mm1"), helper.make_node("Relu", ["m"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")]
    graph = helper.make_graph(nodes, "wo", [helper.make_tensor_value_info("x", h, ["n", 64])],
                              [helper.make_tensor_value_info("y", h, ["n", 32])],
                              [_param("w1", np.float16, 64, 64, scale=0.1),
                               _param("w2", np.float16, 64, 32, scale=0.1)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    samples = [{"x": RNG.standard_normal((4, 64)).astype(np.float16)} for _ in range(4)]
    result = qtool.quantize(tmp_path / "m.onnx", "onnxruntime", samples, preset="int4-weight-only",
                            output=tmp_path / "q.onnx")

    written = onnx.load(result.files[0])
    assert [n.op_type for n in written.graph.node].count("MatMulNBits") == 2
    assert written.graph.output[0].type.tensor_type.elem_type == h
    assert _run(result.files[0], samples[0])[0].dtype == np.float16
    assert result.summary["float_vs_quantized"]["outputs"]["y"]["sqnr_db"] > 16  # 18.1 dB; the float32 twin 18.2


def test_a_float16_model_kept_float_is_written_in_its_own_types(tmp_path):
    """Nothing quantized (the configuration keeps every op float): no Q/DQ, so nothing to lift."""
    model = _half_cnn(tmp_path / "m.onnx")
    result = qtool.quantize(model, "onnxruntime", _samples(TensorProto.FLOAT16), output=tmp_path / "q.onnx",
                            config={"dispatch": {"exclude": ["*"]}})

    written = onnx.load(result.files[0])
    assert {t.data_type for t in written.graph.initializer} == {TensorProto.FLOAT16}
    assert "Cast" not in {n.op_type for n in written.graph.node}
    assert not [d for d in result.diagnostics if d.code == "ort.float32-compute"]


@pytest.mark.parametrize("elem", sorted(TYPES))
def test_q_dq_of_a_half_tensor_take_float32_values(tmp_path, elem):
    graph = load(_half_cnn(tmp_path / "m.onnx", elem))
    assert value_type(graph.variables["x"]) == np.float32 and value_type(graph.variables["f"]) == np.float32


def test_float64_values_have_no_qdq():
    int8 = next(t for t in INTEGER_TYPES if t.name == "int8")
    assert "float64" in placement_problem(int8, QuantScheme.integer(8), 21, np.dtype(np.float64))
