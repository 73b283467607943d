"""Integer ops against onnxruntime: ConvInteger, MatMulInteger, arithmetic on wide unsigned types, float 8 casts."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from op_harness import check_op, make_model, randint, run_torch


@pytest.mark.parametrize("zero_points", [False, True])
def test_conv_integer(zero_points):
    x = randint(0, 255, 1, 2, 5, 5, dtype=np.uint8)
    w = randint(0, 255, 3, 2, 3, 3, dtype=np.uint8, seed=1)
    inputs = [x, w, np.array(7, np.uint8), np.array(120, np.uint8)] if zero_points else [x, w]
    check_op("ConvInteger", inputs, {"pads": [1, 1, 1, 1], "strides": [2, 1]}, opset=10)


@pytest.mark.parametrize("a_type", [np.uint8, np.int8])
def test_matmul_integer_per_row_and_per_column_zero_points(a_type):
    a = randint(-100, 100, 4, 6, dtype=a_type) if a_type == np.int8 else randint(0, 255, 4, 6, dtype=a_type)
    b = randint(0, 255, 6, 3, dtype=np.uint8, seed=1)
    check_op("MatMulInteger", [a, b, np.array(3, a_type), np.array([1, 128, 250], np.uint8)], opset=10)


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])  # uint16: onnxruntime lacks most kernels (node tests)
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min", "Greater", "LessOrEqual"])
def test_wide_unsigned_arithmetic(op, dtype):
    a, b = randint(1, 1000, 3, 4, dtype=dtype), randint(1, 1000, 3, 4, dtype=dtype, seed=1)
    if op == "Sub":
        a = a + b  # stay non-negative
    check_op(op, [a, b], opset=14)


@pytest.mark.parametrize("to", [TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2FNUZ])
def test_cast_to_float8_fnuz_saturates_infinities(to):
    """onnxruntime hands these types to no numpy type: both sides cast back to float."""
    x = np.array([np.inf, -np.inf, 1e6, 0.3, np.nan], np.float32)
    nodes = [helper.make_node("Cast", ["x"], ["y"], to=to), helper.make_node("Cast", ["y"], ["z"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    single = make_model("Cast", [x], {"to": to}, 19, 1, ())
    got = run_torch(single, [x], 19)[0].float().cpu().numpy()
    np.testing.assert_array_equal(got, expected[0])
    assert got[0] == -got[1] == got[2] > 0  # infinities saturate to the largest finite value
