"""Type conversion: Cast and CastLike."""

from __future__ import annotations

import math

import torch

from ._common import torch_dtype
from .registry import op_impl

_FLOAT8 = {torch.float8_e4m3fn, torch.float8_e4m3fnuz, torch.float8_e5m2, torch.float8_e5m2fnuz}
_FLOAT8_WITHOUT_INF = {torch.float8_e4m3fnuz, torch.float8_e5m2fnuz}
# Magnitudes that round past E4M3FN's largest value (448) under round-to-nearest-even.
_E4M3FN_OVERFLOW = 464.0


def _to_float8(x: torch.Tensor, dtype: torch.dtype, saturate: bool) -> torch.Tensor:
    """ONNX float 8 rules; torch itself saturates E4M3FN and overflows the others."""
    if saturate:
        limit = torch.finfo(dtype).max
        clamped = x.clamp(-limit, limit)
        x = torch.where(torch.isinf(x), x, clamped) if dtype in _FLOAT8_WITHOUT_INF else clamped
    elif dtype == torch.float8_e4m3fn:
        x = torch.where(x.abs() > _E4M3FN_OVERFLOW, torch.copysign(torch.full_like(x, math.nan), x), x)
    return x.to(dtype)


def _cast(x: torch.Tensor, dtype: torch.dtype, saturate: bool) -> torch.Tensor:
    if dtype in _FLOAT8 and x.dtype.is_floating_point:
        return _to_float8(x, dtype, saturate)
    return x.to(dtype)


@op_impl("Cast")
def cast(ctx, attrs, inputs):
    return [_cast(inputs[0], torch_dtype(attrs["to"]), bool(attrs.get("saturate", 1)))]


@op_impl("CastLike")
def cast_like(ctx, attrs, inputs):
    x, like = inputs
    return [_cast(x, like.dtype, bool(attrs.get("saturate", 1)))]
