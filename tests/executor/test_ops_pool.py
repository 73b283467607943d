"""Pooling ops against onnxruntime."""

import numpy as np
import pytest
from op_harness import check_op, randint, randn

X = randn(2, 3, 7, 8)

WINDOWS = [
    {"kernel_shape": [2, 2]},
    {"kernel_shape": [3, 3], "strides": [2, 2]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 2], "strides": [2, 3], "pads": [0, 1, 2, 1]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
    {"kernel_shape": [2, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"},
    {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "VALID"},
    {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
    {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
    {"kernel_shape": [3, 3], "strides": [3, 3], "pads": [0, 0, 2, 2], "ceil_mode": 1},
]
DILATED = [
    {"kernel_shape": [2, 2], "dilations": [2, 2]},
    {"kernel_shape": [3, 2], "dilations": [2, 3], "pads": [2, 1, 1, 1], "strides": [2, 1]},
    {"kernel_shape": [2, 2], "dilations": [2, 2], "strides": [2, 2], "ceil_mode": 1},
]


@pytest.mark.parametrize("attrs", WINDOWS + DILATED)
@pytest.mark.parametrize("opset", [12, 22])
def test_max_pool(attrs, opset):
    check_op("MaxPool", [X], attrs, opset=opset)


@pytest.mark.parametrize("attrs", WINDOWS[:7])
def test_max_pool_opset_8(attrs):
    check_op("MaxPool", [X], attrs, opset=8)


@pytest.mark.parametrize("attrs", WINDOWS + DILATED)
@pytest.mark.parametrize("storage_order", [0, 1])
def test_max_pool_indices(attrs, storage_order):
    check_op("MaxPool", [X], attrs | {"storage_order": storage_order}, opset=12, num_outputs=2)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_max_pool_8bit(dtype):
    data = randint(-128 if dtype == np.int8 else 0, 128, 1, 2, 5, 5, dtype=dtype)
    check_op("MaxPool", [data], WINDOWS[3], opset=12)


def test_max_pool_1d_and_3d():
    check_op("MaxPool", [randn(2, 3, 9)], {"kernel_shape": [3], "strides": [2], "pads": [1, 0]}, opset=12)
    attrs = {"kernel_shape": [2, 2, 2], "pads": [0, 1, 0, 1, 0, 1]}
    check_op("MaxPool", [randn(1, 2, 3, 4, 5)], attrs, opset=12, num_outputs=2)


@pytest.mark.parametrize("attrs", WINDOWS)
@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("opset", [11, 19])
def test_average_pool(attrs, count_include_pad, opset):
    check_op("AveragePool", [X], attrs | {"count_include_pad": count_include_pad}, opset=opset)


@pytest.mark.parametrize("attrs", DILATED)
@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_average_pool_dilated(attrs, count_include_pad):
    check_op("AveragePool", [X], attrs | {"count_include_pad": count_include_pad}, opset=19)


def test_average_pool_opset_7_and_1d_3d():
    check_op("AveragePool", [X], WINDOWS[2], opset=7)
    check_op("AveragePool", [randn(2, 3, 9)], {"kernel_shape": [3], "pads": [1, 2]}, opset=11)
    check_op("AveragePool", [randn(1, 2, 4, 4, 5)], {"kernel_shape": [2, 2, 3], "strides": [2, 2, 2]}, opset=11)


@pytest.mark.parametrize("attrs", WINDOWS[:4])
@pytest.mark.parametrize("p", [1, 2, 3])
def test_lp_pool(attrs, p):
    check_op("LpPool", [X], attrs | {"p": p}, opset=11)


@pytest.mark.parametrize("attrs", [WINDOWS[7], DILATED[1]])
def test_lp_pool_opset_18_ceil_and_dilations(attrs):
    check_op("LpPool", [X], attrs, opset=18)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"])
@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 3, 4, 5), (1, 2, 3, 4, 2)])
def test_global_pools(op, shape):
    check_op(op, [randn(*shape)], opset=7)
