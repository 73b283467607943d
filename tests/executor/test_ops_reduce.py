"""Reductions, ArgMax/ArgMin, TopK and CumSum against onnxruntime."""

import numpy as np
import pytest
from op_harness import check_op, i64, randint, randn

X = randn(2, 3, 4)
POSITIVE = np.abs(X) + 0.5
REDUCE_OPS = [
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
    "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp",
]  # fmt: skip
AXES = [None, [1], [0, 2], [-1]]


def _axes_input_since(op):
    return 13 if op == "ReduceSum" else 18


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("axes", AXES)
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_axes_attribute(op, axes, keepdims):
    attrs = {"keepdims": keepdims} | ({} if axes is None else {"axes": axes})
    check_op(op, [POSITIVE], attrs, opset=_axes_input_since(op) - 1)


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("axes", AXES)
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_axes_input(op, axes, keepdims):
    inputs = [POSITIVE] + ([] if axes is None else [i64(*axes)])
    check_op(op, inputs, {"keepdims": keepdims}, opset=_axes_input_since(op), initializers=[1])


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax"])
@pytest.mark.parametrize("noop", [0, 1])
def test_reduce_empty_axes(op, noop):
    """Empty axes reduce everything unless noop_with_empty_axes is set."""
    check_op(op, [X, i64()], {"noop_with_empty_axes": noop}, opset=_axes_input_since(op))


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_reduce_integers(op, dtype):
    """Integer means truncate toward zero."""
    check_op(op, [randint(-5, 5, 3, 4, dtype=dtype)], {"axes": [1]}, opset=11)


TIES = np.array([[3, 1, 3, 2], [0, 5, 5, 5], [2, 2, 2, 2]], np.float32)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("select_last_index", [0, 1])
def test_arg_reductions(op, axis, keepdims, select_last_index):
    attrs = {"axis": axis, "keepdims": keepdims, "select_last_index": select_last_index}
    check_op(op, [TIES], attrs, opset=13)


def test_arg_max_defaults_opset_11():
    check_op("ArgMax", [X], opset=11)


@pytest.mark.parametrize("largest", [0, 1])
@pytest.mark.parametrize("axis", [0, -1])
def test_top_k_input(largest, axis):
    check_op("TopK", [TIES, i64(2)], {"largest": largest, "axis": axis}, opset=11, num_outputs=2)


def test_top_k_attribute():
    check_op("TopK", [X], {"k": 3, "axis": 1}, opset=1, num_outputs=2)


def test_top_k_opset_10():
    check_op("TopK", [X, i64(2)], opset=10, num_outputs=2)


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("axis", [0, -1])
def test_cum_sum(exclusive, reverse, axis):
    check_op("CumSum", [X, np.array(axis, np.int32)], {"exclusive": exclusive, "reverse": reverse}, opset=14)


def test_cum_sum_integers():
    check_op("CumSum", [randint(-5, 5, 3, 4, dtype=np.int32), np.array(1, np.int64)], opset=11)
