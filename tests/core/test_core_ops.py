"""qtool.ops: the one op-role table, its weight axes, and the MatMul axis rule checked against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import qtool
from onnx import TensorProto, helper, numpy_helper
from qtool import ops
from qtool.executor.ops import is_supported
from qtool.ir import from_model_proto

RNG = np.random.default_rng(0)


def _graph(nodes, inputs, output, params, output_shape=None):
    model = helper.make_model(helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info(output, TensorProto.FLOAT, output_shape)],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in params.items()]),
        opset_imports=[helper.make_opsetid("", 17)])
    return model, from_model_proto(model)


def _op(op_type, inputs, params, **attributes):
    shapes = {name: list(np.shape(value)) for name, value in params.items()}
    node = helper.make_node(op_type, inputs, ["y"], name="op", **attributes)
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shapes.get(n, [2, 3]))
              for n in inputs if n not in params]
    return _graph([node], inputs, "y", params)[1].operations["op"]


@pytest.mark.parametrize(("op_type", "inputs", "params", "attributes", "index", "axis"), [
    ("Conv", ["x", "w", "b"], {"w": np.zeros((4, 3, 1, 1)), "b": np.zeros(4)}, {}, 1, 0),
    ("ConvTranspose", ["x", "w"], {"w": np.zeros((3, 4, 1, 1))}, {}, 1, 1),
    ("Gemm", ["x", "w"], {"w": np.zeros((3, 4))}, {}, 1, 1),
    ("Gemm", ["x", "w"], {"w": np.zeros((4, 3))}, {"transB": 1}, 1, 0),
    ("MatMul", ["x", "w"], {"w": np.zeros((3, 4))}, {}, 1, 1),
    ("MatMul", ["w", "x"], {"w": np.zeros((4, 2))}, {}, 0, 0),
    ("MatMul", ["x", "w"], {"w": np.zeros((5, 3, 4))}, {}, 1, 2),
])
def test_weight_index_and_output_channel_axis(op_type, inputs, params, attributes, index, axis):
    op = _op(op_type, inputs, params, **attributes)

    assert ops.weight_index(op) == index and ops.weight_axis(op) == axis
    assert ops.weight_axis(op, op.inputs[index].name) == axis and ops.is_compute(op)


@pytest.mark.parametrize(("op_type", "x", "w", "attributes", "reduction", "in_axis", "out_axis", "channels"), [
    ("Conv", (1, 3, 5, 5), (4, 3, 1, 1), {}, 1, 1, 1, 4),
    ("Conv", (1, 4, 5, 5), (6, 2, 1, 1), {"group": 2}, 1, 1, 1, 6),
    ("ConvTranspose", (1, 4, 5, 5), (4, 3, 1, 1), {"group": 2}, 0, 1, 1, 6),
    ("Gemm", (2, 3), (3, 4), {}, 0, 1, 1, 4),
    ("Gemm", (2, 3), (4, 3), {"transB": 1}, 1, 1, 1, 4),
    ("Gemm", (3, 2), (3, 4), {"transA": 1}, 0, 0, 1, 4),
    ("MatMul", (2, 3), (3, 4), {}, 0, -1, -1, 4),
    ("MatMul", (5, 2, 3), (5, 3, 4), {}, 1, -1, -1, 4),
])
def test_channel_and_reduction_axes_match_what_ort_computes(op_type, x, w, attributes, reduction, in_axis, out_axis,
                                                             channels):
    node = helper.make_node(op_type, ["x", "w"], ["y"], name="op", **attributes)
    model, graph = _graph([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x))], "y",
                          {"w": RNG.normal(size=w)})
    op = graph.operations["op"]
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": RNG.normal(size=x).astype(np.float32)})[0]

    assert (ops.reduction_axis(op), ops.input_channel_axis(op), ops.output_channel_axis(op)) == \
        (reduction, in_axis, out_axis)
    assert ops.out_channels(op) == channels == y.shape[out_axis]
    groups = attributes.get("group", 1) if op_type == "Conv" else 1  # a Conv weight holds C_in / group
    assert w[reduction] * groups == x[in_axis]  # the weight's reduction axis is what the input's channels meet


def test_reduction_axis_of_a_weight_first_matmul_and_of_plain_ops():
    op = _op("MatMul", ["w", "x"], {"w": np.zeros((4, 2))})
    assert ops.weight_index(op) == 0 and ops.reduction_axis(op) == ops.reduction_axis(op, "w") == 1  # K of W @ x
    relu = _op("Relu", ["x"], {})
    assert ops.reduction_axis(relu) is None and ops.input_channel_axis(relu) is None
    assert ops.output_channel_axis(relu) is None and ops.out_channels(relu) is None


def test_bias_steering_and_data_roles():
    conv = _op("Conv", ["x", "w", "b"], {"w": np.zeros((4, 3, 1, 1)), "b": np.zeros(4)})
    assert ops.bias_index(conv) == 2 and ops.has_bias(conv) and ops.is_bias(conv, 2)
    reshape = _op("Reshape", ["x", "shape"], {"shape": [3, 2]})
    assert ops.is_shape_input(reshape, 1) and not ops.is_shape_input(reshape, 0)
    clip = _op("Clip", ["x", "lo", "hi"], {"lo": 0.0, "hi": 6.0})
    assert ops.follower_inputs(clip) == {1, 2} and ops.is_steering_input(clip, 1)
    assert ops.data_input(_op("Where", ["c", "x", "z"], {})) == 1
    div = _op("Div", ["x", "d"], {})
    assert ops.is_pole_input(div, 1) and not ops.is_pole_input(div, 0) and ops.is_pole_input(_op("Log", ["x"], {}), 0)
    relu = _op("Relu", ["x"], {})
    assert ops.op_roles(relu) == ops.OpRoles() and ops.weight_axis(relu) is None and not ops.is_compute(relu)


def test_foreign_ops_are_those_outside_onnx_domain_by_domain_and_type():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Gelu", ["r"], ["g"], name="gelu1", domain="com.microsoft"),
             helper.make_node("Gelu", ["g"], ["y"], name="gelu2", domain="com.microsoft")]
    _, graph = _graph(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])], "y", {})
    assert ops.foreign_ops(graph) == {("com.microsoft", "Gelu"): ["gelu1", "gelu2"]}


def test_every_op_type_of_the_table_has_an_executor_kernel():
    missing = [op_type for op_type in ops.OP_ROLES if not is_supported(op_type)]
    assert missing == []


def test_matmul_with_its_weight_first_is_quantized_per_row_and_runs_in_ort(tmp_path):
    """W @ x: the weight's output channels are its rows (axis 0 of a 2-D W), as ORT's DequantizeLinear reads it."""
    weight = RNG.standard_normal((6, 4)).astype(np.float32) * np.array([[0.01], [1], [5], [0.1], [2], [50]],
                                                                       np.float32)
    model, _ = _graph([helper.make_node("MatMul", ["w", "x"], ["y"], name="mm")],
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, "t"])], "y", {"w": weight},
                      ["n", 6, "t"])
    path = tmp_path / "wx.onnx"
    onnx.save(model, path)
    samples = [{"x": RNG.standard_normal((2, 4, 3)).astype(np.float32)} for _ in range(8)]

    result = qtool.quantize(path, "onnxruntime", samples, output=tmp_path / "q.onnx", check_agreement=True)

    exported = onnx.load(result.files[0])
    dequantize = next(n for n in exported.graph.node if n.op_type == "DequantizeLinear" and n.output[0] in
                      next(m for m in exported.graph.node if m.op_type == "MatMul").input[:1])
    assert helper.get_attribute_value(next(a for a in dequantize.attribute if a.name == "axis")) == 0
    scale = numpy_helper.to_array(next(i for i in exported.graph.initializer if i.name == dequantize.input[1]))
    np.testing.assert_allclose(scale, np.abs(weight).max(axis=1) / 127, rtol=1e-5)  # one scale per row
    x = np.concatenate([sample["x"] for sample in samples])  # within the calibrated output range
    quantized = ort.InferenceSession(str(result.files[0]), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    reference = weight @ x
    assert 10 * np.log10(np.mean(reference**2) / np.mean((quantized - reference) ** 2)) > 25
    assert result.agreement["max_steps"] <= 1
