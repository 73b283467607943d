"""Conv, ConvTranspose and the matrix ops against onnxruntime."""

import numpy as np
import pytest
from op_harness import check_op, randn


@pytest.mark.parametrize(
    "attrs",
    [
        {},
        {"pads": [1, 1, 1, 1]},
        {"pads": [0, 1, 2, 1], "strides": [2, 1]},
        {"dilations": [2, 2], "pads": [2, 2, 2, 2]},
        {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
        {"strides": [2, 2], "auto_pad": "SAME_LOWER"},
        {"strides": [3, 2], "auto_pad": "VALID"},
        {"kernel_shape": [3, 3], "strides": [1, 2]},
    ],
)
@pytest.mark.parametrize("opset", [1, 11])
def test_conv_2d(attrs, opset):
    check_op("Conv", [randn(2, 4, 7, 8), randn(6, 4, 3, 3, seed=1), randn(6, seed=2)], attrs, opset=opset)


@pytest.mark.parametrize("group", [2, 4])
def test_conv_grouped_without_bias(group):
    check_op("Conv", [randn(1, 4, 6, 6), randn(8, 4 // group, 3, 3, seed=1)], {"group": group}, opset=11)


@pytest.mark.parametrize(
    "attrs", [{}, {"pads": [1, 2], "strides": [2]}, {"auto_pad": "SAME_LOWER", "strides": [2]}, {"dilations": [2]}]
)
def test_conv_1d(attrs):
    check_op("Conv", [randn(2, 3, 9), randn(4, 3, 3, seed=1), randn(4, seed=2)], attrs, opset=11)


def test_conv_3d():
    attrs = {"pads": [1, 0, 1, 0, 1, 1], "strides": [1, 2, 1]}
    check_op("Conv", [randn(1, 2, 4, 5, 4), randn(3, 2, 2, 3, 3, seed=1), randn(3, seed=2)], attrs, opset=11)


@pytest.mark.parametrize(
    "attrs",
    [
        {},
        {"strides": [2, 2]},
        {"strides": [2, 2], "pads": [1, 0, 1, 2]},
        {"strides": [2, 3], "output_padding": [1, 2]},
        {"strides": [2, 2], "dilations": [2, 1], "pads": [1, 1, 1, 1]},
        {"strides": [2, 2], "output_shape": [9, 10]},
        {"strides": [2, 2], "output_shape": [8, 8], "auto_pad": "SAME_UPPER"},
        {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
        {"strides": [2, 2], "auto_pad": "SAME_LOWER"},
        {"strides": [2, 2], "auto_pad": "VALID"},
    ],
)
@pytest.mark.parametrize("opset", [1, 11])
def test_conv_transpose_2d(attrs, opset):
    check_op("ConvTranspose", [randn(2, 4, 4, 5), randn(4, 3, 3, 3, seed=1), randn(3, seed=2)], attrs, opset=opset)


def test_conv_transpose_grouped_without_bias():
    check_op("ConvTranspose", [randn(1, 4, 3, 3), randn(4, 3, 2, 2, seed=1)], {"group": 2, "strides": [2, 2]}, opset=11)


def test_conv_transpose_1d_and_3d():
    check_op("ConvTranspose", [randn(1, 2, 5), randn(2, 3, 3, seed=1)], {"strides": [2], "pads": [1, 0]}, opset=11)
    check_op("ConvTranspose", [randn(1, 2, 3, 2, 3), randn(2, 2, 2, 2, 2, seed=1)], {"strides": [2, 1, 2]}, opset=11)


@pytest.mark.parametrize(
    "a_shape, b_shape",
    [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (3, 4, 2)), ((4,), (4, 3)), ((2, 3, 4), (4,)), ((4,), (4,))],
)
def test_matmul(a_shape, b_shape):
    check_op("MatMul", [randn(*a_shape), randn(*b_shape, seed=1)], opset=13)


def test_matmul_integers():
    check_op("MatMul", [np.arange(12, dtype=np.int32).reshape(3, 4), np.ones((4, 2), np.int32)], opset=13)


@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("c_shape", [None, (5,), (3, 5), (1, 1)])
@pytest.mark.parametrize("alpha, beta", [(1.0, 1.0), (0.5, 2.0)])
def test_gemm(trans_a, trans_b, c_shape, alpha, beta):
    a = randn(*((4, 3) if trans_a else (3, 4)))
    b = randn(*((5, 4) if trans_b else (4, 5)), seed=1)
    c = None if c_shape is None else randn(*c_shape, seed=2)
    attrs = {"transA": trans_a, "transB": trans_b, "alpha": alpha, "beta": beta}
    check_op("Gemm", [a, b, c], attrs, opset=13)


@pytest.mark.parametrize(
    "equation, shapes",
    [
        ("ij,jk->ik", [(2, 3), (3, 4)]),
        ("bij, bjk -> bik", [(2, 2, 3), (2, 3, 4)]),
        ("...ij,...jk", [(2, 2, 3), (1, 3, 4)]),
        ("ii->i", [(3, 3)]),
        ("ij->", [(3, 4)]),
        ("i,j->ij", [(3,), (4,)]),
    ],
)
def test_einsum(equation, shapes):
    check_op("Einsum", [randn(*s, seed=i) for i, s in enumerate(shapes)], {"equation": equation}, opset=12)


@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [None, 0, 1, -2])
def test_trilu(upper, k):
    inputs = [randn(2, 4, 5)] + ([] if k is None else [np.array(k, np.int64)])
    check_op("Trilu", inputs, {"upper": upper}, opset=14)
