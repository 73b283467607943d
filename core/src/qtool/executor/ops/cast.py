"""Type conversion: Cast and CastLike."""

from __future__ import annotations

import torch

from ._common import torch_dtype
from .registry import op_impl

_FLOAT8 = {torch.float8_e4m3fn, torch.float8_e4m3fnuz, torch.float8_e5m2, torch.float8_e5m2fnuz}
_FLOAT8_WITHOUT_INF = {torch.float8_e4m3fnuz, torch.float8_e5m2fnuz}


def _cast(x: torch.Tensor, dtype: torch.dtype, saturate: bool) -> torch.Tensor:
    """Float 8 targets saturate out-of-range values (and, where they can, infinities)."""
    if dtype in _FLOAT8 and saturate and x.dtype.is_floating_point:
        limit = torch.finfo(dtype).max
        clamped = x.clamp(-limit, limit)
        x = torch.where(torch.isinf(x), x, clamped) if dtype in _FLOAT8_WITHOUT_INF else clamped
    return x.to(dtype)


@op_impl("Cast")
def cast(ctx, attrs, inputs):
    return [_cast(inputs[0], torch_dtype(attrs["to"]), bool(attrs.get("saturate", 1)))]


@op_impl("CastLike")
def cast_like(ctx, attrs, inputs):
    x, like = inputs
    return [_cast(x, like.dtype, bool(attrs.get("saturate", 1)))]
