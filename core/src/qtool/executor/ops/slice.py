"""Joining and cutting tensors: Concat, Split, Slice."""

from __future__ import annotations

import math

import torch

from ._common import attr_or_input, normalize_axes, normalize_axis, optional_input, to_list
from .registry import op_impl


@op_impl("Concat")
def concat(ctx, attrs, inputs):
    axis = normalize_axis(attrs.get("axis", 1), inputs[0].dim())
    return [torch.cat(inputs, axis)]


@op_impl("Split")
def split(ctx, attrs, inputs):
    """Explicit sizes (attribute before opset 13, input since) or equal parts.

    Equal parts number ``num_outputs`` (opset 18) or the declared outputs; the
    last one is smaller when the axis does not divide evenly.
    """
    x = inputs[0]
    dim = normalize_axis(attrs.get("axis", 0), x.dim())
    sizes = attr_or_input(ctx, attrs, inputs, "split", 1, 13)
    if not sizes:
        sizes = math.ceil(x.shape[dim] / attrs.get("num_outputs", ctx.num_outputs))
    return list(torch.split(x, sizes, dim))


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))


def _slice_axis(x: torch.Tensor, axis: int, start: int, end: int, step: int) -> torch.Tensor:
    """Slice one axis with ONNX clamping; negative steps walk a flipped copy."""
    n = x.shape[axis]
    start, end = (v + n if v < 0 else v for v in (start, end))
    index = [slice(None)] * x.dim()
    if step > 0:
        index[axis] = slice(_clamp(start, 0, n), _clamp(end, 0, n), step)
        return x[tuple(index)]
    start, end = _clamp(start, 0, n - 1), _clamp(end, -1, n - 1)
    index[axis] = slice(n - 1 - start, n - 1 - end, -step)
    return x.flip(axis)[tuple(index)]


@op_impl("Slice")
def slice_(ctx, attrs, inputs):
    """starts/ends/axes are attributes before opset 10; inputs (plus steps) since."""
    x = inputs[0]
    if ctx.opset < 10:
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    else:
        starts, ends = to_list(inputs[1]), to_list(inputs[2])
        axes, steps = (optional_input(inputs, i) for i in (3, 4))
        axes = None if axes is None else to_list(axes)
        steps = None if steps is None else to_list(steps)
    axes = normalize_axes(axes if axes is not None else list(range(len(starts))), x.dim())
    steps = steps if steps is not None else [1] * len(starts)
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        x = _slice_axis(x, axis, start, end, step)
    return [x]
