"""Comparison, logical, bitwise and selection ops."""

from __future__ import annotations

import torch

from ._common import tensor_op, unsigned_safe
from .registry import op_impl, register_op

for _name, _fn in {
    "Equal": torch.eq,
    "Greater": torch.gt,
    "GreaterOrEqual": torch.ge,
    "Less": torch.lt,
    "LessOrEqual": torch.le,
    "And": torch.logical_and,
    "Or": torch.logical_or,
    "Xor": torch.logical_xor,
    "BitwiseAnd": torch.bitwise_and,
    "BitwiseOr": torch.bitwise_or,
    "BitwiseXor": torch.bitwise_xor,
}.items():
    register_op(_name, tensor_op(unsigned_safe(_fn)))

register_op("Not", tensor_op(torch.logical_not))
register_op("BitwiseNot", tensor_op(unsigned_safe(torch.bitwise_not)))
register_op("IsNaN", tensor_op(torch.isnan))
register_op("Where", tensor_op(unsigned_safe(torch.where)))


@op_impl("IsInf")
def is_inf(ctx, attrs, inputs):
    x = inputs[0]
    found = torch.zeros_like(x, dtype=torch.bool)
    if attrs.get("detect_negative", 1):
        found |= torch.isneginf(x)
    if attrs.get("detect_positive", 1):
        found |= torch.isposinf(x)
    return [found]


@op_impl("BitShift")
def bit_shift(ctx, attrs, inputs):
    x, shift = inputs
    fn = torch.bitwise_left_shift if attrs["direction"] == "LEFT" else torch.bitwise_right_shift
    return [unsigned_safe(fn)(x, shift)]
