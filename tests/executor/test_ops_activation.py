"""Activations and softmax-family ops against onnxruntime."""

import numpy as np
import pytest
from op_harness import check_op, randint, randn

X = randn(2, 3, 4) * 3


@pytest.mark.parametrize(
    "op, attrs, opset",
    [
        ("Relu", {}, 14),
        ("LeakyRelu", {}, 16),
        ("LeakyRelu", {"alpha": 0.3}, 6),
        ("Sigmoid", {}, 13),
        ("HardSigmoid", {}, 6),
        ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, 6),
        ("HardSwish", {}, 14),
        ("Softplus", {}, 1),
        ("Softsign", {}, 1),
        ("Elu", {}, 6),
        ("Elu", {"alpha": 0.5}, 6),
        ("Selu", {}, 6),
        ("Selu", {"alpha": 1.5, "gamma": 2.0}, 6),
        ("Celu", {"alpha": 2.0}, 12),
        ("Gelu", {}, 20),
        ("Gelu", {"approximate": "tanh"}, 20),
        ("Mish", {}, 18),
        ("ThresholdedRelu", {}, 10),
        ("ThresholdedRelu", {"alpha": 0.5}, 10),
        ("Shrink", {}, 9),
        ("Shrink", {"bias": 1.5, "lambd": 1.0}, 9),
        ("Tanh", {}, 13),
    ],
)
def test_activation(op, attrs, opset):
    check_op(op, [X], attrs, opset=opset)


def test_relu_float16():
    check_op("Relu", [X.astype(np.float16)], opset=14)


@pytest.mark.parametrize("slope_shape", [(1,), (3, 1), (4,), (2, 3, 4)])
def test_prelu_broadcasts_slope(slope_shape):
    check_op("PRelu", [X, randn(*slope_shape, seed=1)], opset=16)


@pytest.mark.parametrize("attrs", [{}, {"min": -1.0}, {"max": 0.5}, {"min": -0.5, "max": 2.0}])
def test_clip_attributes(attrs):
    check_op("Clip", [X], attrs, opset=6)


BOUND = np.array(0.5, np.float32)


@pytest.mark.parametrize("low, high", [(-BOUND, BOUND), (None, BOUND), (-BOUND, None), (None, None), (BOUND, -BOUND)])
@pytest.mark.parametrize("opset", [11, 13])
def test_clip_inputs(low, high, opset):
    check_op("Clip", [X, low, high], opset=opset)


def test_clip_integers():
    check_op("Clip", [randint(-9, 9, 10), np.array(-2, np.int64), np.array(3, np.int64)], opset=13)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("axis", [None, 0, 1, -1])
@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_family(op, axis, opset):
    """Before opset 13 the input is coerced to 2D around ``axis``; since, one axis."""
    attrs = {} if axis is None else {"axis": axis}
    check_op(op, [X], attrs, opset=opset)


def test_hardmax_takes_first_maximum():
    check_op("Hardmax", [np.array([[1, 3, 3, 0], [2, 2, 1, 2]], np.float32)], opset=13)
