"""Tensors of the types torch lacks (int4, uint4, int2, uint2, float 4) or numpy lacks (bfloat16, float 8) as
initializers and between ops: the executor holds them in a container (int8, uint8, float32) or in torch's own
type, and the ops ONNX Runtime runs for it (DequantizeLinear, QuantizeLinear) read and write them in their own
type. Checked against ONNX Runtime."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import qtool
from onnx import TensorProto, helper, numpy_helper
from qtool.executor import TorchExecutor
from qtool.ir import from_model_proto

RNG = np.random.default_rng(0)
K, N, BLOCK = 8, 6, 4
INTEGER = (TensorProto.INT4, TensorProto.UINT4, TensorProto.INT2, TensorProto.UINT2)
TYPES = {TensorProto.INT4: 21, TensorProto.UINT4: 21, TensorProto.INT2: 25, TensorProto.UINT2: 25,
         TensorProto.FLOAT8E4M3FN: 21, TensorProto.FLOAT8E4M3FNUZ: 21, TensorProto.FLOAT8E5M2: 21,
         TensorProto.FLOAT8E5M2FNUZ: 21}  # each with an opset whose DequantizeLinear takes it per block


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _codes(element_type: int, shape) -> np.ndarray:
    dtype = helper.tensor_dtype_to_np_dtype(element_type)
    if element_type in INTEGER:
        info = ml_dtypes.iinfo(dtype)
        return RNG.integers(int(info.min), int(info.max) + 1, shape).astype(dtype)
    return RNG.normal(0, 2, shape).astype(dtype)


def dequantized_weight_model(element_type: int, blocked: bool) -> onnx.ModelProto:
    """x -> QuantizeLinear -> DequantizeLinear (codes of the type, computed at run time and declared nowhere) ->
    MatMul with a weight stored as codes of the type behind a DequantizeLinear, per block along K or per column.
    The dequantized weight and input are outputs too."""
    dtype = helper.tensor_dtype_to_np_dtype(element_type)
    shape = (K // BLOCK, N) if blocked else (N,)
    inits = [numpy_helper.from_array(_codes(element_type, (K, N)), "wq"),
             numpy_helper.from_array(RNG.uniform(0.01, 0.1, shape).astype(np.float32), "ws"),
             numpy_helper.from_array(np.array(0.05, np.float32), "xs")]
    weight, activation = ["wq", "ws"], ["x", "xs"]
    if element_type in INTEGER:  # zero points of the type (float 8 has none but 0)
        inits += [numpy_helper.from_array(_codes(element_type, shape), "wz"),
                  numpy_helper.from_array(np.array(1, dtype), "xz")]
        weight, activation = [*weight, "wz"], [*activation, "xz"]
    attrs = {"axis": 0, "block_size": BLOCK} if blocked else {"axis": 1}
    nodes = [helper.make_node("DequantizeLinear", weight, ["w"], "dq_w", **attrs),
             helper.make_node("QuantizeLinear", activation, ["xq"], "q_x"),
             helper.make_node("DequantizeLinear", ["xq", *activation[1:]], ["xd"], "dq_x"),
             helper.make_node("MatMul", ["xd", "w"], ["y"], "mm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", K])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("w", "xd", "y")],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", TYPES[element_type])])


@pytest.mark.parametrize("blocked", [False, True], ids=["per_axis", "blocked"])
@pytest.mark.parametrize("element_type", list(TYPES), ids=[TensorProto.DataType.Name(t) for t in TYPES])
def test_weights_and_activations_of_narrow_types_run_as_onnxruntime_runs_them(element_type, blocked):
    """An int4 initializer was a TypeError in torch.from_numpy ('can't convert np.ndarray of type ml_dtypes.int4'),
    and a float 8 one reached ONNX Runtime's DequantizeLinear as an ml_dtypes array it cannot take; the int4 codes
    a QuantizeLinear writes came back as an error ('No corresponding Numpy type'), float 8 ones as their bytes."""
    model = dequantized_weight_model(element_type, blocked)
    x = RNG.normal(0, 0.3, (3, K)).astype(np.float32)
    expected = _ort(model, {"x": x})
    got = TorchExecutor(from_model_proto(model)).forward({"x": x}, ["w", "xd", "y"])
    np.testing.assert_array_equal(got[0], expected[0])  # the weight, dequantized
    np.testing.assert_array_equal(got[1], expected[1])  # the input through codes of the type
    np.testing.assert_allclose(got[2], expected[2], rtol=1e-5, atol=1e-6)


def test_bfloat16_goes_to_onnxruntime_and_comes_back_as_bfloat16():
    """An op the executor runs through ONNX Runtime (CenterCropPad) on a bfloat16 input: ONNX Runtime takes no
    ml_dtypes array ('Numpy_type can't be converted to MLDataType') and returns none; the result is the executor's
    bfloat16 tensor, bit for bit."""
    def model(cast: bool) -> onnx.ModelProto:  # ONNX Runtime's reference between exact Casts from and to float32
        elem = TensorProto.FLOAT if cast else TensorProto.BFLOAT16
        nodes = [helper.make_node("CenterCropPad", ["xb", "s"], ["yb"], "crop")]
        if cast:
            nodes = [helper.make_node("Cast", ["x"], ["xb"], to=TensorProto.BFLOAT16), *nodes,
                     helper.make_node("Cast", ["yb"], ["y"], to=TensorProto.FLOAT)]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x" if cast else "xb", elem, [4, 3])],
                                  [helper.make_tensor_value_info("y" if cast else "yb", elem, None)],
                                  [numpy_helper.from_array(np.array([2, 5], np.int64), "s")])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])

    x = RNG.normal(0, 1, (4, 3)).astype(ml_dtypes.bfloat16)
    (expected,) = _ort(model(cast=True), {"x": x.astype(np.float32)})
    (got,) = TorchExecutor(from_model_proto(model(cast=False))).forward({"xb": x})
    assert got.dtype == np.dtype(ml_dtypes.bfloat16) and got.shape == (2, 5)
    np.testing.assert_array_equal(got.astype(np.float32), expected)


def test_a_float4_initializer_is_held_in_float32():
    """float 4 E2M1 (which ONNX Runtime 1.32 runs in no CPU kernel): its values as onnx defines them."""
    w = np.array([[-6, -1.5, 0, 0.5], [1, 2, 3, 4]], ml_dtypes.float4_e2m1fn)
    graph = helper.make_graph([helper.make_node("Cast", ["w"], ["y"], "up", to=TensorProto.FLOAT)], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    (got,) = TorchExecutor(from_model_proto(model)).forward({}, ["y"])
    np.testing.assert_array_equal(got, w.astype(np.float32))


def test_a_model_with_int4_weights_quantizes_with_its_agreement_checked_and_is_analysed(tmp_path):
    """A model holding blocked int4 weights (opset 21) stopped in the simulation with a traceback, under
    --check-agreement and in analyse; its written model now agrees with the simulation."""
    model = dequantized_weight_model(TensorProto.INT4, blocked=True)
    graph = model.graph
    del graph.node[1:3]  # x straight into the MatMul, which qtool quantizes
    graph.node[-1].input[0] = "x"
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", N]))
    for name in ("xs", "xz"):
        graph.initializer.remove(next(t for t in graph.initializer if t.name == name))
    path = tmp_path / "int4.onnx"
    onnx.save(model, path)
    calib = {"x": RNG.normal(0, 1, (16, K)).astype(np.float32)}
    result = qtool.quantize(path, "onnxruntime", calib, output=tmp_path / "q.onnx", check_agreement=True)
    assert result.agreement["max_steps"] <= 1, result.agreement
    report = qtool.analyse(path, "onnxruntime", calib, samples=4)
    assert [r["op"] for r in report.layerwise] == ["mm"] and [r["op"] for r in report.graphwise] == ["mm"]
