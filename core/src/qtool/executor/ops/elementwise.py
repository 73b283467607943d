"""Element-wise arithmetic and math with numpy-style broadcasting."""

from __future__ import annotations

import functools

import torch

from ._common import tensor_op, unsigned_safe
from .registry import op_impl, register_op


def _div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Integer division truncates toward zero, as in C."""
    if a.dtype.is_floating_point:
        return torch.div(a, b)
    return torch.div(a, b, rounding_mode="trunc")


def _pow(base: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """The result keeps the base's type whatever the exponent's type."""
    return torch.pow(base, exponent).to(base.dtype)


for _name, _fn in {
    "Add": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
    "Div": _div,
    "Pow": _pow,
    "Abs": torch.abs,
    "Neg": torch.neg,
    "Sign": torch.sign,
    "Floor": torch.floor,
    "Ceil": torch.ceil,
    "Round": torch.round,  # half to even, as ONNX requires
    "Reciprocal": torch.reciprocal,
    "Sqrt": torch.sqrt,
    "Exp": torch.exp,
    "Log": torch.log,
    "Erf": torch.erf,
    "Sin": torch.sin,
    "Cos": torch.cos,
    "Tan": torch.tan,
    "Asin": torch.asin,
    "Acos": torch.acos,
    "Atan": torch.atan,
    "Sinh": torch.sinh,
    "Cosh": torch.cosh,
    "Tanh": torch.tanh,
    "Asinh": torch.asinh,
    "Acosh": torch.acosh,
    "Atanh": torch.atanh,
}.items():
    register_op(_name, tensor_op(unsigned_safe(_fn)))


@op_impl("Mod")
def mod(ctx, attrs, inputs):
    """fmod=0 takes the divisor's sign (integers only); fmod=1 the dividend's."""
    a, b = inputs
    fn = torch.fmod if attrs.get("fmod", 0) else torch.remainder
    return [unsigned_safe(fn)(a, b)]


def _variadic(fn):
    fn = unsigned_safe(fn)

    def op(ctx, attrs, inputs):
        return [functools.reduce(fn, inputs)]

    return op


register_op("Max", _variadic(torch.maximum))
register_op("Min", _variadic(torch.minimum))
register_op("Sum", _variadic(torch.add))


@op_impl("Mean")
def mean(ctx, attrs, inputs):
    return [functools.reduce(torch.add, inputs) / len(inputs)]
