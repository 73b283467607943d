"""Element-wise arithmetic, math, comparison and logical ops against onnxruntime."""

import numpy as np
import pytest
from op_harness import check_op, randint, randn

FLOAT_BINARY = ["Add", "Sub", "Mul", "Div"]


@pytest.mark.parametrize("op", FLOAT_BINARY)
@pytest.mark.parametrize("opset", [7, 14])
@pytest.mark.parametrize("shapes", [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 5)), ((), (2, 2))])
def test_float_binary_broadcasts(op, opset, shapes):
    a, b = randn(*shapes[0], seed=1), randn(*shapes[1], seed=2)
    check_op(op, [a, b], opset=opset)


@pytest.mark.parametrize("op", FLOAT_BINARY)
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_binary(op, dtype):
    a = randint(-50, 50, 3, 4, dtype=dtype, seed=1)
    b = randint(1, 7, 3, 4, dtype=dtype, seed=2) * np.where(randint(0, 2, 3, 4, seed=3), 1, -1).astype(dtype)
    check_op(op, [a, b], opset=14)


def test_float16_add():
    check_op("Add", [randn(2, 3, dtype=np.float16), randn(3, dtype=np.float16, seed=1)], opset=14)


@pytest.mark.parametrize(
    "base, exponent",
    [
        (np.abs(randn(2, 3)) + 0.1, randn(2, 3, seed=1)),
        (randn(2, 3), np.array(2.0, np.float32)),
        (randn(2, 3), np.array(3, np.int64)),
        (randint(-4, 5, 2, 3, dtype=np.int64), np.array(2, np.int64)),
    ],
)
def test_pow(base, exponent):
    check_op("Pow", [base, exponent], opset=15)


@pytest.mark.parametrize("fmod", [0, 1])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_mod_integers(fmod, dtype):
    a = randint(-20, 20, 4, 5, dtype=dtype, seed=1)
    b = np.array([3, -3, 7, -2, 5], dtype=dtype)
    check_op("Mod", [a, b], {"fmod": fmod}, opset=13)


def test_mod_float_fmod():
    check_op("Mod", [randn(4, 5) * 5, randn(5, seed=1)], {"fmod": 1}, opset=13)


UNARY = [
    "Abs", "Neg", "Sign", "Floor", "Ceil", "Exp", "Erf", "Sin", "Cos", "Tan",
    "Atan", "Sinh", "Cosh", "Tanh", "Asinh",
]  # fmt: skip


@pytest.mark.parametrize("op", UNARY)
def test_unary_any_real(op):
    check_op(op, [randn(3, 4) * 2], opset=13)


@pytest.mark.parametrize("op", ["Sqrt", "Log", "Reciprocal", "Acosh"])
def test_unary_positive(op):
    check_op(op, [np.abs(randn(3, 4)) + 1.0], opset=13)


@pytest.mark.parametrize("op", ["Asin", "Acos", "Atanh"])
def test_unary_unit_interval(op):
    check_op(op, [np.tanh(randn(3, 4))], opset=13)


def test_round_half_to_even():
    check_op("Round", [np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 2.4, -2.6], np.float32)], opset=11)


@pytest.mark.parametrize("op", ["Abs", "Neg", "Sign"])
def test_unary_integers(op):
    check_op(op, [randint(-9, 9, 10, dtype=np.int32)], opset=13)


@pytest.mark.parametrize("op", ["Max", "Min", "Sum", "Mean"])
@pytest.mark.parametrize("count", [1, 2, 3])
def test_variadic(op, count):
    shapes = [(2, 3, 4), (3, 1), (4,)][:count]
    check_op(op, [randn(*s, seed=i) for i, s in enumerate(shapes)], opset=13)


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_variadic_integers(op):
    check_op(op, [randint(-9, 9, 2, 3, seed=1), randint(-9, 9, 3, seed=2)], opset=13)


@pytest.mark.parametrize("op", ["Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual"])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_comparisons(op, dtype):
    a = randint(-3, 3, 3, 4, seed=1).astype(dtype)
    b = randint(-3, 3, 4, seed=2).astype(dtype)
    check_op(op, [a, b], opset=16 if op.endswith("OrEqual") else 13)


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logical_binary(op):
    a, b = randint(0, 2, 3, 4, seed=1).astype(bool), randint(0, 2, 4, seed=2).astype(bool)
    check_op(op, [a, b], opset=7)


def test_not():
    check_op("Not", [randint(0, 2, 3, 4).astype(bool)], opset=1)


@pytest.mark.parametrize("op", ["BitwiseAnd", "BitwiseOr", "BitwiseXor"])
def test_bitwise_binary(op):
    check_op(op, [randint(-100, 100, 3, 4, dtype=np.int32, seed=1), randint(-100, 100, 4, dtype=np.int32)], opset=18)


def test_bitwise_not():
    check_op("BitwiseNot", [randint(0, 255, 3, 4, dtype=np.uint8)], opset=18)


@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_bit_shift(direction):
    x, y = randint(0, 255, 6, dtype=np.uint8, seed=1), randint(0, 4, 6, dtype=np.uint8, seed=2)
    check_op("BitShift", [x, y], {"direction": direction}, opset=11)


def test_where_broadcasts():
    cond = randint(0, 2, 3, 1, seed=1).astype(bool)
    check_op("Where", [cond, randn(3, 4), randn(4, seed=1)], opset=16)


SPECIALS = np.array([1.0, np.nan, np.inf, -np.inf, 0.0, -2.0], np.float32)


def test_isnan():
    check_op("IsNaN", [SPECIALS], opset=13)


@pytest.mark.parametrize("negative, positive", [(1, 1), (0, 1), (1, 0)])
def test_isinf(negative, positive):
    check_op("IsInf", [SPECIALS], {"detect_negative": negative, "detect_positive": positive}, opset=10)
