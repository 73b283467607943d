"""Pad in constant, reflect, edge and wrap modes; negative pads crop."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import normalize_axes, optional_input, to_list
from .registry import op_impl


def _pads_per_axis(ctx, attrs, inputs, rank: int) -> tuple[list[int], list[int]]:
    """(begins, ends) for every axis; opset 18 may name a subset of axes."""
    if ctx.opset < 11:
        pads, axes = attrs["pads"], None
    else:
        pads, axes = to_list(inputs[1]), optional_input(inputs, 3)
    axes = list(range(rank)) if axes is None else normalize_axes(to_list(axes), rank)
    begins, ends = [0] * rank, [0] * rank
    for i, axis in enumerate(axes):
        begins[axis], ends[axis] = pads[i], pads[i + len(axes)]
    return begins, ends


def _constant_value(ctx, attrs, inputs):
    if ctx.opset < 11:
        return attrs.get("value", 0.0)
    value = optional_input(inputs, 2)
    return 0 if value is None else value.item()


def _source_index(mode: str, begin: int, end: int, n: int, device) -> torch.Tensor:
    """Index into the axis for each output position of a non-constant pad."""
    positions = torch.arange(-begin, n + end, device=device)
    if mode == "edge":
        return positions.clamp(0, n - 1)
    if mode == "wrap":
        return positions.remainder(n)
    if mode == "reflect":
        period = max(2 * (n - 1), 1)
        folded = positions.remainder(period)
        return torch.where(folded < n, folded, period - folded)
    raise NotImplementedError(f"Pad mode {mode!r}")


@op_impl("Pad")
def pad(ctx, attrs, inputs):
    x = inputs[0]
    begins, ends = _pads_per_axis(ctx, attrs, inputs, x.dim())
    mode = attrs.get("mode", "constant")
    if mode == "constant":
        pairs = [p for b, e in reversed(list(zip(begins, ends, strict=True))) for p in (b, e)]
        return [F.pad(x, pairs, value=_constant_value(ctx, attrs, inputs))]
    for axis, (begin, end) in enumerate(zip(begins, ends, strict=True)):
        if begin < 0 or end < 0:
            x = x.narrow(axis, max(-begin, 0), x.shape[axis] - max(-begin, 0) - max(-end, 0))
        if begin > 0 or end > 0:
            index = _source_index(mode, max(begin, 0), max(end, 0), x.shape[axis], x.device)
            x = x.index_select(axis, index)
    return [x]
