"""Helpers shared by the op modules."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import torch
from onnx import TensorProto

from .registry import OpContext, register_op

_TORCH_DTYPES = {
    TensorProto.FLOAT: torch.float32,
    TensorProto.UINT8: torch.uint8,
    TensorProto.INT8: torch.int8,
    TensorProto.UINT16: torch.uint16,
    TensorProto.INT16: torch.int16,
    TensorProto.INT32: torch.int32,
    TensorProto.INT64: torch.int64,
    TensorProto.BOOL: torch.bool,
    TensorProto.FLOAT16: torch.float16,
    TensorProto.DOUBLE: torch.float64,
    TensorProto.UINT32: torch.uint32,
    TensorProto.UINT64: torch.uint64,
    TensorProto.BFLOAT16: torch.bfloat16,
    TensorProto.FLOAT8E4M3FN: torch.float8_e4m3fn,
    TensorProto.FLOAT8E4M3FNUZ: torch.float8_e4m3fnuz,
    TensorProto.FLOAT8E5M2: torch.float8_e5m2,
    TensorProto.FLOAT8E5M2FNUZ: torch.float8_e5m2fnuz,
}


# Types torch lacks, held in a wider container whose values stay on the narrow type's grid (ml_dtypes converts).
NARROW_TYPES = {
    TensorProto.INT4: (ml_dtypes.int4, torch.int8), TensorProto.UINT4: (ml_dtypes.uint4, torch.uint8),
    TensorProto.INT2: (ml_dtypes.int2, torch.int8), TensorProto.UINT2: (ml_dtypes.uint2, torch.uint8),
    TensorProto.FLOAT4E2M1: (ml_dtypes.float4_e2m1fn, torch.float32),
}


def torch_dtype(onnx_type: int) -> torch.dtype:
    """Torch dtype for an ONNX TensorProto data type code (the container for the types of NARROW_TYPES)."""
    if onnx_type in NARROW_TYPES:
        return NARROW_TYPES[onnx_type][1]
    try:
        return _TORCH_DTYPES[onnx_type]
    except KeyError:
        name = TensorProto.DataType.Name(onnx_type)
        raise NotImplementedError(f"ONNX data type {name} has no torch equivalent") from None


def to_list(t: torch.Tensor) -> list:
    """Small tensor (shape, axes, scales ...) as a flat python list."""
    return t.reshape(-1).tolist()


def normalize_axis(axis: int, rank: int) -> int:
    """Map a possibly negative axis into [0, rank)."""
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def normalize_axes(axes: list[int], rank: int) -> list[int]:
    return [normalize_axis(a, rank) for a in axes]


def optional_input(inputs: list[torch.Tensor | None], index: int) -> torch.Tensor | None:
    """Input ``index``, or None when it is absent or omitted."""
    return inputs[index] if index < len(inputs) else None


def attr_or_input(
    ctx: OpContext,
    attrs: dict[str, Any],
    inputs: list[torch.Tensor | None],
    name: str,
    index: int,
    since: int,
) -> list | None:
    """Value that ONNX moved from attribute ``name`` to input ``index`` at opset ``since``."""
    if ctx.opset >= since:
        t = optional_input(inputs, index)
        return None if t is None else to_list(t)
    return attrs.get(name)


_WIDE_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)


def unsigned_safe(fn):
    """``fn`` also on uint16/32/64 tensors, which torch has few kernels for: computed in int64 (uint64 reinterpreted,
    exact below 2**63), integer results cast back to the unsigned type, booleans as they are."""

    def wrapped(*tensors):
        dtype = next((t.dtype for t in tensors if isinstance(t, torch.Tensor) and t.dtype in _WIDE_UNSIGNED), None)
        if dtype is None:
            return fn(*tensors)
        result = fn(*(_as_int64(t) for t in tensors))
        if result.dtype != torch.int64:
            return result
        return result.view(torch.uint64) if dtype == torch.uint64 else result.to(dtype)

    wrapped.__name__, wrapped.__doc__ = fn.__name__, fn.__doc__
    return wrapped


def _as_int64(t):
    if not isinstance(t, torch.Tensor) or t.dtype not in _WIDE_UNSIGNED:
        return t
    return t.view(torch.int64) if t.dtype == torch.uint64 else t.to(torch.int64)


def tensor_op(fn):
    """Op function applying ``fn`` to all inputs and returning its one result."""

    def op(ctx, attrs, inputs):
        return [fn(*inputs)]

    op.__name__, op.__doc__ = fn.__name__, fn.__doc__
    return op


def unary(*op_types: str):
    """Register ``fn(x, attrs) -> tensor`` as a one-input, one-output op."""

    def decorate(fn):
        def op(ctx, attrs, inputs):
            return [fn(inputs[0], attrs)]

        op.__name__, op.__doc__ = fn.__name__, fn.__doc__
        for op_type in op_types:
            register_op(op_type, op, source=fn.__module__)
        return fn

    return decorate
