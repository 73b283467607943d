"""Ops that create tensors: Constant, ConstantOfShape, Range, EyeLike."""

from __future__ import annotations

import numpy as np
import torch

from ._common import to_list, torch_dtype
from .registry import op_impl

_CONSTANT_SCALARS = {
    "value_float": torch.float32,
    "value_floats": torch.float32,
    "value_int": torch.int64,
    "value_ints": torch.int64,
}


@op_impl("Constant")
def constant(ctx, attrs, inputs):
    """The one set attribute among value, value_float(s), value_int(s)."""
    if "value" in attrs:
        return [torch.tensor(np.asarray(attrs["value"]), device=ctx.device)]
    for name, dtype in _CONSTANT_SCALARS.items():
        if name in attrs:
            return [torch.tensor(attrs[name], dtype=dtype, device=ctx.device)]
    raise NotImplementedError(f"Constant {ctx.node_name!r}: unsupported attribute(s) {sorted(attrs)}")


@op_impl("ConstantOfShape")
def constant_of_shape(ctx, attrs, inputs):
    """Fill value and type come from the one-element ``value`` (float32 0 by default)."""
    value = torch.tensor(np.asarray(attrs.get("value", np.zeros(1, np.float32))).reshape(-1))
    return [torch.full(to_list(inputs[0]), value.item(), dtype=value.dtype, device=ctx.device)]


@op_impl("Range")
def range_(ctx, attrs, inputs):
    start, limit, delta = (t.item() for t in inputs)
    return [torch.arange(start, limit, delta, dtype=inputs[0].dtype, device=ctx.device)]


@op_impl("EyeLike")
def eye_like(ctx, attrs, inputs):
    """Ones on diagonal ``k`` of a 2D tensor shaped like the input."""
    x = inputs[0]
    dtype = torch_dtype(attrs["dtype"]) if "dtype" in attrs else x.dtype
    rows = torch.arange(x.shape[0], device=x.device)[:, None]
    cols = torch.arange(x.shape[1], device=x.device)
    return [(cols - rows == attrs.get("k", 0)).to(dtype)]
