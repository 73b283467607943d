"""Type conversion: Cast and CastLike."""

from __future__ import annotations

import math

import numpy as np
import torch

from ._common import NARROW_TYPES, torch_dtype
from .registry import op_impl

_FLOAT8 = {torch.float8_e4m3fn, torch.float8_e4m3fnuz, torch.float8_e5m2, torch.float8_e5m2fnuz}
# Magnitudes that round past E4M3FN's largest value (448) under round-to-nearest-even.
_E4M3FN_OVERFLOW = 464.0


def _to_float8(x: torch.Tensor, dtype: torch.dtype, saturate: bool) -> torch.Tensor:
    """ONNX float 8 rules (saturating, infinities too); torch itself saturates E4M3FN and overflows the others."""
    if saturate:
        limit = torch.finfo(dtype).max
        x = x.clamp(-limit, limit)
    elif dtype == torch.float8_e4m3fn:
        x = torch.where(x.abs() > _E4M3FN_OVERFLOW, torch.copysign(torch.full_like(x, math.nan), x), x)
    return x.to(dtype)


def _cast(x: torch.Tensor, dtype: torch.dtype, saturate: bool) -> torch.Tensor:
    if dtype in _FLOAT8 and x.dtype.is_floating_point:
        return _to_float8(x, dtype, saturate)
    return x.to(dtype)


def _to_narrow(x: torch.Tensor, onnx_type: int) -> torch.Tensor:
    """Onto the grid of int4, uint4, int2, uint2 or float4 E2M1 (as ml_dtypes converts), in its container type."""
    narrow, container = NARROW_TYPES[onnx_type]
    source = x.detach().cpu()
    if not source.dtype.is_floating_point or source.dtype not in (torch.float32, torch.float64, torch.float16):
        source = source.to(torch.float32)
    values = source.numpy().astype(narrow).astype(torch.empty(0, dtype=container).numpy().dtype)
    return torch.from_numpy(np.ascontiguousarray(values)).to(x.device)


@op_impl("Cast")
def cast(ctx, attrs, inputs):
    if attrs["to"] in NARROW_TYPES:
        return [_to_narrow(inputs[0], attrs["to"])]
    return [_cast(inputs[0], torch_dtype(attrs["to"]), bool(attrs.get("saturate", 1)))]


@op_impl("CastLike")
def cast_like(ctx, attrs, inputs):
    """To the type of ``like``; a narrow type (int4 ...) comes from the graph's declaration, not its container."""
    x, like = inputs
    declared = ctx.input_types[1] if len(ctx.input_types) > 1 and ctx.input_types[1] is not None else None
    narrow = next((code for code, (dtype, _) in NARROW_TYPES.items() if np.dtype(dtype) == declared), None)
    if narrow is not None:
        return [_to_narrow(x, narrow)]
    return [_cast(x, like.dtype, bool(attrs.get("saturate", 1)))]
