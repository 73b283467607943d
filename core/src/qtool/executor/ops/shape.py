"""Shape queries and layout changes: Shape, Size, Reshape, Flatten, Transpose,
Squeeze, Unsqueeze, Expand, Tile, DepthToSpace, SpaceToDepth."""

from __future__ import annotations

import math

import numpy as np
import torch

from ._common import attr_or_input, normalize_axes, to_list
from .registry import op_impl


def _int64(values, ctx) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64, device=ctx.device)


@op_impl("Shape")
def shape(ctx, attrs, inputs):
    """Dimensions [start:end] (opset 15), with python-style clamping."""
    dims = list(inputs[0].shape)
    return [_int64(dims[attrs.get("start", 0) : attrs.get("end", len(dims))], ctx)]


@op_impl("Size")
def size(ctx, attrs, inputs):
    return [_int64(inputs[0].numel(), ctx)]


@op_impl("Reshape")
def reshape(ctx, attrs, inputs):
    """0 copies the input dimension unless allowzero=1; -1 is inferred."""
    x = inputs[0]
    target = attr_or_input(ctx, attrs, inputs, "shape", 1, 5)
    if not attrs.get("allowzero", 0):
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return [x.reshape(target)]


@op_impl("Flatten")
def flatten(ctx, attrs, inputs):
    x = inputs[0]
    axis = attrs.get("axis", 1)
    axis = axis + x.dim() if axis < 0 else axis
    return [x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))]


@op_impl("Transpose")
def transpose(ctx, attrs, inputs):
    x = inputs[0]
    return [x.permute(attrs.get("perm", list(reversed(range(x.dim())))))]


@op_impl("Squeeze")
def squeeze(ctx, attrs, inputs):
    """Without axes every size-1 dimension goes."""
    x = inputs[0]
    axes = attr_or_input(ctx, attrs, inputs, "axes", 1, 13)
    if axes is None:
        return [x.squeeze()]
    return [x.squeeze(tuple(normalize_axes(axes, x.dim())))]


@op_impl("Unsqueeze")
def unsqueeze(ctx, attrs, inputs):
    """Axes index the output, whose rank is rank(x) + len(axes)."""
    x = inputs[0]
    axes = attr_or_input(ctx, attrs, inputs, "axes", 1, 13)
    for axis in sorted(normalize_axes(axes, x.dim() + len(axes))):
        x = x.unsqueeze(axis)
    return [x]


@op_impl("Expand")
def expand(ctx, attrs, inputs):
    """Bidirectional broadcast of x against the requested shape (numpy's rule: torch.broadcast_shapes imports
    torch._refs and sympy, a second the first time)."""
    x, target = inputs
    return [x.expand(np.broadcast_shapes(tuple(x.shape), tuple(to_list(target))))]


@op_impl("Tile")
def tile(ctx, attrs, inputs):
    x, repeats = inputs
    return [x.repeat(to_list(repeats))]


@op_impl("DepthToSpace")
def depth_to_space(ctx, attrs, inputs):
    """DCR (default) takes depth as [block, block, C']; CRD as [C', block, block]."""
    x = inputs[0]
    b = attrs["blocksize"]
    n, c, h, w = x.shape
    if attrs.get("mode", "DCR") == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
    return [y.reshape(n, c // (b * b), h * b, w * b)]


@op_impl("SpaceToDepth")
def space_to_depth(ctx, attrs, inputs):
    x = inputs[0]
    b = attrs["blocksize"]
    n, c, h, w = x.shape
    order = (0, 1, 3, 5, 2, 4) if attrs.get("mode", "DCR") == "CRD" else (0, 3, 5, 1, 2, 4)
    y = x.reshape(n, c, h // b, b, w // b, b).permute(*order)
    return [y.reshape(n, c * b * b, h // b, w // b)]
